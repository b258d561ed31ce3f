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

/// What extending (or shortening) a run does to its learning rate at `step`, resumed under
/// `now` from a checkpoint whose schedule spanned `saved_steps`; `None` when the step count
/// is the same or the learning rate at `step` does not change (a constant schedule).
pub fn span_change(now: &Schedule, saved_steps: usize, step: usize) -> Option<String> {
    if saved_steps == now.total_steps {
        return None;
    }
    let before = Schedule {
        total_steps: saved_steps,
        ..now.clone()
    };
    let (was, is) = (before.lr(step), now.lr(step));
    if was == is {
        return None;
    }
    let jump = if is > was {
        ", a jump up without warm-up"
    } else {
        ""
    };
    let kind = match now.kind {
        ScheduleKind::Constant => "constant",
        ScheduleKind::Linear => "linear",
        ScheduleKind::Cosine => "cosine",
    };
    Some(format!(
        "train.steps is now {} where the checkpoint's schedule spanned {saved_steps}: the \
         {kind} schedule is recomputed over {} steps, so the learning rate at step {step} is \
         {is:.3e} instead of {was:.3e}{jump}",
        now.total_steps, now.total_steps
    ))
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

    #[test]
    fn a_changed_span_is_reported_with_both_learning_rates() {
        let cfg = ScheduleSection {
            kind: ScheduleKind::Cosine,
            warmup_steps: 10,
            min_lr: 0.0,
        };
        // A finished 100-step run extended to 200: from 0 back up to half the base rate.
        let now = Schedule::new(&cfg, 1e-3, 200);
        let msg = span_change(&now, 100, 100).expect("the rate changes");
        assert!(
            msg.contains("train.steps is now 200")
                && msg.contains("spanned 100")
                && msg.contains("cosine")
                && msg.contains("instead of 0.000e0")
                && msg.contains("jump up without warm-up"),
            "{msg}"
        );
        assert!(
            (now.lr(100) - 0.5e-3 * (1.0 + (std::f64::consts::PI * 90.0 / 190.0).cos())).abs()
                < 1e-12
        );
        // The same span, or a constant schedule: nothing to say.
        assert!(span_change(&now, 200, 100).is_none());
        let constant = Schedule::new(
            &ScheduleSection {
                kind: ScheduleKind::Constant,
                ..cfg
            },
            1e-3,
            200,
        );
        assert!(span_change(&constant, 100, 100).is_none());
        // Shortened mid-run: the rate drops, no jump.
        let short = Schedule::new(&cfg, 1e-3, 120);
        let msg = span_change(&short, 200, 60).expect("the rate changes");
        assert!(!msg.contains("jump"), "{msg}");
    }
}
