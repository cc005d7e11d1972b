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
}
