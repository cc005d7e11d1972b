//! Order-independent sums of floats. Workers see records in different
//! orders; float addition is not associative, so sums are kept in fixed
//! point (2^-64 resolution in an i128) and results are byte-identical for
//! any worker count.

/// A sum of f64 values, exact up to 2^-64 per term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExactSum(i128);

const SCALE: f64 = 18_446_744_073_709_551_616.0; // 2^64

impl ExactSum {
    /// Adds one value (values beyond ±4.6e18 saturate).
    pub fn add(&mut self, v: f64) {
        self.0 = self.0.saturating_add((v * SCALE) as i128);
    }
    /// Adds another sum.
    pub fn merge(&mut self, o: ExactSum) {
        self.0 = self.0.saturating_add(o.0);
    }
    /// The sum as f64.
    pub fn get(self) -> f64 {
        self.0 as f64 / SCALE
    }
}

/// `num / den`, or 0 when the denominator is 0.
pub fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_independent() {
        let vals = [0.1, 1e9, 0.2, -1e9, 0.3, 1.0 / 3.0];
        let mut a = ExactSum::default();
        vals.iter().for_each(|v| a.add(*v));
        let mut b = ExactSum::default();
        vals.iter().rev().for_each(|v| b.add(*v));
        assert_eq!(a, b);
        assert!((a.get() - (0.6 + 1.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn zero_denominator() {
        assert_eq!(ratio(5.0, 0.0), 0.0);
        assert_eq!(ratio(1.0, 4.0), 0.25);
    }
}
