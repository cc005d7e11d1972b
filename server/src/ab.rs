//! A/B assignment: a stable hash of (experiment, user) picks a bucket 0..100;
//! variants own consecutive bucket ranges sized by their traffic.

use xxhash_rust::xxh3::xxh3_64;

/// The bucket (0..100) of `user` in `experiment`: the same in every process and release.
pub fn bucket(experiment: &str, user: &str) -> u32 {
    let mut key = Vec::with_capacity(experiment.len() + user.len() + 1);
    key.extend_from_slice(experiment.as_bytes());
    key.push(0); // a separator no id can contain, so ("a","bc") and ("ab","c") differ
    key.extend_from_slice(user.as_bytes());
    (xxh3_64(&key) % 100) as u32
}

/// The index of the variant owning `bucket`, given traffic shares summing to 100.
pub fn pick(traffic: &[u32], bucket: u32) -> usize {
    let mut upper = 0;
    for (i, t) in traffic.iter().enumerate() {
        upper += t;
        if bucket < upper {
            return i;
        }
    }
    traffic.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_is_stable_and_follows_the_ratios() {
        assert_eq!(bucket("exp", "u1"), bucket("exp", "u1"));
        assert_eq!(pick(&[50, 50], 49), 0);
        assert_eq!(pick(&[50, 50], 50), 1);
        assert_eq!(pick(&[0, 100], 0), 1, "a 0% variant gets nobody");
        let n = 20_000;
        let in_first = (0..n).filter(|u| pick(&[20, 80], bucket("exp_x", &format!("user_{u}"))) == 0).count();
        let share = in_first as f64 / n as f64;
        assert!((share - 0.2).abs() < 0.02, "20% expected, got {share}");
    }
}
