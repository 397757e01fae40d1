//! Deterministic train/eval split: the same items, fraction and seed always give the same split,
//! on every platform and independent of the `rand` crate's version (a SplitMix64 shuffle).

/// Split `items` into (train, eval). `round(len * fraction)` items go to eval, at least one and
/// at most `len - 1` when `fraction > 0` and there are two or more items; both parts keep the
/// input order. A fraction that is not a positive finite number gives no eval items.
pub fn split_eval<T>(items: Vec<T>, fraction: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let n = items.len();
    let n_eval = if !(fraction.is_finite() && fraction > 0.0) || n < 2 {
        0
    } else {
        ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
    };
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    // Fisher-Yates; the first n_eval positions of the shuffle are the eval set.
    for i in (1..n).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut is_eval = vec![false; n];
    for &i in &order[..n_eval] {
        is_eval[i] = true;
    }
    let (mut train, mut eval) = (Vec::with_capacity(n - n_eval), Vec::with_capacity(n_eval));
    for (item, e) in items.into_iter().zip(is_eval) {
        if e {
            eval.push(item);
        } else {
            train.push(item);
        }
    }
    (train, eval)
}

/// Steele, Lea & Flood's SplitMix64 (the seeder of the xoshiro family).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // The widely published SplitMix64 test vector for seed 1234567 (also checked with a Python port).
        let mut r = SplitMix64(1234567);
        assert_eq!(r.next(), 6457827717110365317);
        assert_eq!(r.next(), 3203168211198807973);
    }

    #[test]
    fn sizes_and_order() {
        let (train, eval) = split_eval((0..100).collect::<Vec<_>>(), 0.1, 7);
        assert_eq!((train.len(), eval.len()), (90, 10));
        assert!(train.windows(2).all(|w| w[0] < w[1]));
        assert!(eval.windows(2).all(|w| w[0] < w[1]));
        let mut all: Vec<i32> = train.iter().chain(&eval).copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn edge_fractions() {
        assert_eq!(split_eval(vec![1, 2, 3], 0.0, 1).1.len(), 0);
        assert_eq!(split_eval(vec![1, 2, 3], f64::NAN, 1).1.len(), 0);
        assert_eq!(split_eval(vec![1, 2, 3], 0.01, 1).1.len(), 1);
        assert_eq!(split_eval(vec![1, 2, 3], 1.0, 1).0.len(), 1);
        assert_eq!(split_eval(vec![1], 0.5, 1), (vec![1], vec![]));
        assert_eq!(split_eval(Vec::<u8>::new(), 0.5, 1), (vec![], vec![]));
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let items: Vec<u32> = (0..50).collect();
        let a = split_eval(items.clone(), 0.2, 42);
        assert_eq!(a, split_eval(items.clone(), 0.2, 42));
        assert_ne!(a.1, split_eval(items, 0.2, 43).1);
    }
}
