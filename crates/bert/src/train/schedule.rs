//! The learning-rate schedule of BERT: linear warm-up from 0, then linear decay to 0 at the last step
//! (`transformers`' `get_linear_schedule_with_warmup`).

/// Linear warm-up, then linear decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearSchedule {
    pub peak_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LinearSchedule {
    /// The learning rate for optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let remaining = self.total_steps.saturating_sub(step) as f64;
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        self.peak_lr * (remaining / decay_steps).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_zero() {
        let s = LinearSchedule {
            peak_lr: 1e-3,
            warmup_steps: 3,
            total_steps: 10,
        };
        let lrs: Vec<f64> = (0..11).map(|i| s.lr(i)).collect();
        assert_eq!(lrs[0], 0.0);
        assert!((lrs[1] - 1e-3 / 3.0).abs() < 1e-12);
        assert_eq!(lrs[3], 1e-3);
        assert!((lrs[4] - 1e-3 * 6.0 / 7.0).abs() < 1e-12);
        assert_eq!(lrs[10], 0.0);
    }
}
