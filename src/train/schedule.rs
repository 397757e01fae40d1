//! Learning-rate schedules: linear warmup, then constant, linear decay or cosine decay to 0.

pub use crate::recipe::Scheduler;

/// The learning rate for optimizer step `step` (0-based) of `total`.
pub fn lr_at(step: usize, total: usize, warmup: usize, base: f64, sched: Scheduler) -> f64 {
    if warmup > 0 && step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup.min(step)) as f64 / decay_steps as f64).min(1.0);
    match sched {
        Scheduler::Constant => base,
        Scheduler::Linear => base * (1.0 - progress),
        Scheduler::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let lr = |s, sch| lr_at(s, 100, 10, 1.0, sch);
        assert!((lr(0, Scheduler::Cosine) - 0.1).abs() < 1e-12);
        assert!((lr(9, Scheduler::Cosine) - 1.0).abs() < 1e-12);
        assert!((lr(10, Scheduler::Cosine) - 1.0).abs() < 1e-12);
        assert!((lr(55, Scheduler::Cosine) - 0.5).abs() < 1e-12);
        assert!((lr(55, Scheduler::Linear) - 0.5).abs() < 1e-12);
        assert!(lr(99, Scheduler::Cosine) < 0.01);
        assert_eq!(lr(70, Scheduler::Constant), 1.0);
        assert_eq!(lr_at(5, 10, 0, 2.0, Scheduler::Constant), 2.0);
    }
}
