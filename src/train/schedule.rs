//! Learning-rate schedules with linear warm-up (the shapes of HF `transformers`'
//! `get_{constant,linear,cosine}_schedule_with_warmup`, with a `min_lr` floor).

use super::config::{ScheduleKind, ScheduleSection};

#[derive(Debug, Clone)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    pub fn new(cfg: &ScheduleSection, base_lr: f64, total_steps: usize) -> Self {
        Self {
            kind: cfg.kind,
            base_lr,
            min_lr: cfg.min_lr,
            warmup_steps: cfg.warmup_steps,
            total_steps,
        }
    }

    /// The learning rate for optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * step as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let factor = match self.kind {
            ScheduleKind::Constant => return self.base_lr,
            ScheduleKind::Linear => 1.0 - progress,
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        self.min_lr + (self.base_lr - self.min_lr) * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind) -> Schedule {
        Schedule::new(
            &ScheduleSection {
                kind,
                warmup_steps: 10,
                min_lr: 0.1,
            },
            1.0,
            110,
        )
    }

    #[test]
    fn warmup_then_decay() {
        for kind in [
            ScheduleKind::Constant,
            ScheduleKind::Linear,
            ScheduleKind::Cosine,
        ] {
            let s = sched(kind);
            assert_eq!(s.lr(0), 0.0);
            assert!((s.lr(5) - 0.5).abs() < 1e-12);
            assert!((s.lr(10) - 1.0).abs() < 1e-12);
        }
        let lin = sched(ScheduleKind::Linear);
        assert!((lin.lr(60) - 0.55).abs() < 1e-12);
        assert!((lin.lr(110) - 0.1).abs() < 1e-12);
        let cos = sched(ScheduleKind::Cosine);
        assert!((cos.lr(60) - 0.55).abs() < 1e-12); // half way: mean of lr and min_lr
        assert!(
            (cos.lr(35) - (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos()))).abs()
                < 1e-12
        );
        assert!((cos.lr(110) - 0.1).abs() < 1e-12);
        assert_eq!(sched(ScheduleKind::Constant).lr(100), 1.0);
    }
}
