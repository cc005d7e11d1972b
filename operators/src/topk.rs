//! Top-K by score desc, then id asc.

use std::cmp::Ordering;

use recflow_schemas::Str;

/// Ranking order: higher score first, then smaller id.
pub fn rank_order(a: &(Str, f64), b: &(Str, f64)) -> Ordering {
    b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0))
}

/// Keeps the best `k` entries with score > 0, sorted by [`rank_order`].
pub fn top_k(mut entries: Vec<(Str, f64)>, k: usize) -> Vec<(Str, f64)> {
    entries.retain(|e| e.1 > 0.0);
    if entries.len() > k && k > 0 {
        entries.select_nth_unstable_by(k - 1, rank_order);
        entries.truncate(k);
    }
    if k == 0 {
        entries.clear();
    }
    entries.sort_unstable_by(rank_order);
    entries
}

/// Ranking order for integer counts: higher count first, then smaller id.
fn count_order(a: &(Str, u64), b: &(Str, u64)) -> Ordering {
    b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0))
}

/// The ids of the best `k` entries by [`count_order`] (ids distinct). For a
/// small `k` over a short list: picks each next one by a scan instead of
/// sorting a copy, so the only allocation is the result.
pub fn top_k_ids(entries: &[(Str, u64)], k: usize) -> Vec<Str> {
    let mut out = Vec::with_capacity(k.min(entries.len()));
    let mut last: Option<&(Str, u64)> = None;
    while out.len() < k {
        let next =
            entries.iter().filter(|e| last.is_none_or(|l| count_order(l, e).is_lt())).min_by(|a, b| count_order(a, b));
        let Some(e) = next else { break };
        out.push(e.0.clone());
        last = Some(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_break_by_id_and_zero_scores_drop() {
        let e = |s: &str, v: f64| (Str::new(s), v);
        let got = top_k(vec![e("b", 2.0), e("a", 2.0), e("c", 5.0), e("d", 0.0), e("z", 1.0)], 3);
        assert_eq!(got, vec![e("c", 5.0), e("a", 2.0), e("b", 2.0)]);
        let got = top_k(vec![e("b", 1.0), e("a", 1.0)], 1);
        assert_eq!(got, vec![e("a", 1.0)]);
        assert!(top_k(vec![e("a", 0.0)], 5).is_empty());
    }

    #[test]
    fn top_k_ids_matches_a_full_sort() {
        // Weights with ties, in name order as the aggregate keeps them.
        let cats: Vec<(Str, u64)> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .zip([5u64, 9, 5, 1, 9, 5, 2])
            .map(|(c, w)| (Str::new(c), w))
            .collect();
        let mut sorted = cats.clone();
        sorted.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        for n in 0..=9 {
            let want: Vec<Str> = sorted.iter().take(n).map(|c| c.0.clone()).collect();
            assert_eq!(top_k_ids(&cats, n), want, "n = {n}");
        }
        assert!(top_k_ids(&[], 3).is_empty());
    }
}
