//! Accuracy with a 95% confidence interval, and its micro and macro averages.
//!
//! - Per subject and micro (pooled over questions): the **Wilson score interval**
//!   (Wilson 1927), which stays inside [0, 1] and behaves at small n and at 0% / 100%,
//!   unlike the normal ("Wald") interval.
//! - Macro (mean of subject accuracies, each subject weighing the same): a normal interval
//!   around the mean, variance `Σ v_i / S²` with the Agresti-Coull per-subject variance
//!   `v_i = p̃(1 - p̃) / (n + z²)`, `p̃ = (c + z²/2) / (n + z²)` (so subjects at 0% or 100% still
//!   carry uncertainty), clamped to [0, 1].

use serde::{Deserialize, Serialize};

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval for `correct` successes out of `n` at quantile `z`.
/// `n == 0` carries no information: the interval is the whole [0, 1].
pub fn wilson(correct: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n_f = n as f64;
    let p = correct as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denom;
    let half = z / denom * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    // The bounds are exactly 0 and 1 at the extremes; say so instead of leaving rounding error.
    let lo = if correct == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let hi = if correct == n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (lo, hi)
}

/// An accuracy over `scored` questions, with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub scored: usize,
    pub correct: usize,
    /// `correct / scored`; 0 when nothing was scored.
    pub acc: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Accuracy of `correct` out of `scored` with a 95% Wilson interval.
pub fn accuracy(correct: usize, scored: usize) -> Accuracy {
    debug_assert!(correct <= scored);
    let (ci_low, ci_high) = wilson(correct, scored, Z95);
    Accuracy {
        scored,
        correct,
        acc: if scored == 0 {
            0.0
        } else {
            correct as f64 / scored as f64
        },
        ci_low,
        ci_high,
    }
}

/// Micro average: every question weighs the same. `parts` are `(correct, scored)` per subject.
pub fn micro(parts: &[(usize, usize)]) -> Accuracy {
    let correct = parts.iter().map(|p| p.0).sum();
    let scored = parts.iter().map(|p| p.1).sum();
    accuracy(correct, scored)
}

/// Macro average: the mean of subject accuracies, every subject weighing the same.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MacroAccuracy {
    /// Subjects averaged (those with at least one scored question).
    pub subjects: usize,
    pub acc: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Macro average of `(correct, scored)` per subject; subjects with nothing scored are left out.
pub fn macro_avg(parts: &[(usize, usize)]) -> MacroAccuracy {
    let z2 = Z95 * Z95;
    // (accuracy, Agresti-Coull variance) per subject.
    let used: Vec<(f64, f64)> = parts
        .iter()
        .filter(|p| p.1 > 0)
        .map(|&(c, n)| {
            let (c, n) = (c as f64, n as f64);
            let p_adj = (c + z2 / 2.0) / (n + z2);
            (c / n, p_adj * (1.0 - p_adj) / (n + z2))
        })
        .collect();
    if used.is_empty() {
        return MacroAccuracy {
            subjects: 0,
            acc: 0.0,
            ci_low: 0.0,
            ci_high: 1.0,
        };
    }
    let s = used.len() as f64;
    let acc = used.iter().map(|u| u.0).sum::<f64>() / s;
    let var = used.iter().map(|u| u.1).sum::<f64>() / (s * s);
    let half = Z95 * var.sqrt();
    MacroAccuracy {
        subjects: used.len(),
        acc,
        ci_low: (acc - half).max(0.0),
        ci_high: (acc + half).min(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        // The closed form evaluated independently in Python (= R's prop.test without
        // continuity correction): 37/193 -> [0.1424066, 0.2530459].
        let (lo, hi) = wilson(37, 193, Z95);
        assert!((lo - 0.1424066).abs() < 1e-6, "{lo}");
        assert!((hi - 0.2530459).abs() < 1e-6, "{hi}");
        // The extremes stay inside [0, 1] and are not degenerate.
        let (lo, hi) = wilson(0, 10, Z95);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2775328).abs() < 1e-6, "{hi}");
        let (lo, hi) = wilson(10, 10, Z95);
        assert!((lo - 0.7224672).abs() < 1e-6, "{lo}");
        assert_eq!(hi, 1.0);
        assert_eq!(wilson(0, 0, Z95), (0.0, 1.0));
    }

    #[test]
    fn micro_pools_questions_macro_weighs_subjects() {
        let parts = [(9, 10), (10, 100)];
        let m = micro(&parts);
        assert_eq!((m.correct, m.scored), (19, 110));
        assert!((m.acc - 19.0 / 110.0).abs() < 1e-12);
        let a = macro_avg(&parts);
        assert_eq!(a.subjects, 2);
        assert!((a.acc - 0.5).abs() < 1e-12);
        assert!(a.ci_low < 0.5 && a.ci_high > 0.5);
        // Subjects at 100% still leave an interval.
        let full = macro_avg(&[(10, 10), (5, 5)]);
        assert_eq!(full.acc, 1.0);
        assert!(full.ci_low < 0.9, "{full:?}");
        // Empty subjects do not drag the macro mean to zero.
        let b = macro_avg(&[(9, 10), (10, 100), (0, 0)]);
        assert_eq!(b, a);
    }

    #[test]
    fn accuracy_of_nothing_is_defined() {
        let a = accuracy(0, 0);
        assert_eq!(a.acc, 0.0);
        assert_eq!((a.ci_low, a.ci_high), (0.0, 1.0));
    }
}
