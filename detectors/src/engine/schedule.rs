//! Learning rate as a function of the position in training: linear warmup over the first iterations, then
//! step decay at epoch milestones (mmdetection's `LinearWarmup` + `MultiStepLR` by epoch).

use crate::config::LrConfig;

/// The schedule of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    /// Learning rate after warmup and before the first milestone.
    pub base_lr: f64,
    /// Iterations of warmup (0 = none).
    pub warmup_iters: usize,
    /// Factor of the learning rate at iteration 0.
    pub warmup_ratio: f64,
    /// Epochs (0-based count of finished epochs) at which the rate is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    /// Decay factor.
    pub gamma: f64,
}

impl LrSchedule {
    /// The schedule of `cfg` around `base_lr`.
    pub fn new(base_lr: f64, cfg: &LrConfig) -> Self {
        Self {
            base_lr,
            warmup_iters: cfg.warmup_iters,
            warmup_ratio: cfg.warmup_ratio,
            milestones: cfg.step.clone(),
            gamma: cfg.gamma,
        }
    }

    /// Learning rate for the iteration `global_iter` (0-based, counted over all epochs) inside `epoch` (0-based).
    ///
    /// The step rate is `base * gamma^(milestones <= epoch)`; during warmup it is scaled by
    /// `1 - (1 - i / warmup_iters) * (1 - warmup_ratio)`, so the first iteration runs at `warmup_ratio * rate`.
    pub fn lr(&self, epoch: usize, global_iter: usize) -> f64 {
        let decays = self.milestones.iter().filter(|&&m| epoch >= m).count();
        let rate = self.base_lr * self.gamma.powi(decays as i32);
        if global_iter < self.warmup_iters {
            let k = (1.0 - global_iter as f64 / self.warmup_iters as f64) * (1.0 - self.warmup_ratio);
            rate * (1.0 - k)
        } else {
            rate
        }
    }
}

/// Linear scaling rule: `lr * total_batch / base_batch`.
pub fn auto_scaled_lr(lr: f64, total_batch: usize, base_batch: usize) -> f64 {
    lr * total_batch as f64 / base_batch.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> LrSchedule {
        LrSchedule {
            base_lr: 0.01,
            warmup_iters: 500,
            warmup_ratio: 0.001,
            milestones: vec![8, 11],
            gamma: 0.1,
        }
    }

    #[test]
    fn warmup_is_linear_from_ratio_to_one() {
        let s = sched();
        // i = 0: 0.01 * (1 - (1 - 0) * 0.999) = 0.01 * 0.001 = 1e-5
        assert!((s.lr(0, 0) - 1e-5).abs() < 1e-12);
        // i = 250: k = 0.5 * 0.999 = 0.4995, lr = 0.01 * 0.5005 = 0.005005
        assert!((s.lr(0, 250) - 0.005005).abs() < 1e-12);
        assert_eq!(s.lr(0, 500), 0.01);
    }

    #[test]
    fn steps_decay_at_epoch_milestones() {
        let s = sched();
        assert_eq!(s.lr(7, 10_000), 0.01);
        assert!((s.lr(8, 10_000) - 0.001).abs() < 1e-15);
        assert!((s.lr(10, 10_000) - 0.001).abs() < 1e-15);
        assert!((s.lr(11, 10_000) - 0.0001).abs() < 1e-15);
    }

    #[test]
    fn no_warmup_and_no_milestones_is_constant() {
        let s = LrSchedule {
            base_lr: 0.1,
            warmup_iters: 0,
            warmup_ratio: 0.001,
            milestones: vec![],
            gamma: 0.1,
        };
        assert_eq!(s.lr(0, 0), 0.1);
        assert_eq!(s.lr(100, 1_000_000), 0.1);
    }

    #[test]
    fn auto_scale_follows_the_linear_rule() {
        // 0.01 for 16 images -> 2 images: 0.00125
        assert!((auto_scaled_lr(0.01, 2, 16) - 0.00125).abs() < 1e-15);
    }
}
