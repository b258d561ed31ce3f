//! data2vec's teacher: an exponential moving average of the student's encoder, kept in the
//! same [`ParamStore`] under `teacher.` so that checkpoints hold it and a resumed run goes
//! on from exactly the teacher it stopped with. The optimizer leaves it alone
//! ([`ParamStore::freeze_prefix`]); it starts as a copy of the student and, after each
//! optimizer step, moves to `decay * teacher + (1 - decay) * student`.

use candle_core::Var;

use crate::error::{Error, Result};
use crate::params::ParamStore;

/// Prefix of the teacher's parameters: `teacher.` + the student encoder's own prefix.
pub const PREFIX: &str = "teacher.";

/// The decay after each step: linear from `start` to `end` over `anneal_steps` updates,
/// then `end` (data2vec's `ema_decay`, `ema_end_decay`, `ema_anneal_end_step`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmaSchedule {
    pub start: f64,
    pub end: f64,
    pub anneal_steps: usize,
}

impl EmaSchedule {
    /// The decay of the update after optimizer step `step` (1 for the first update).
    pub fn decay(&self, step: usize) -> f64 {
        let done = step.saturating_sub(1);
        if done >= self.anneal_steps {
            return self.end;
        }
        self.start + (self.end - self.start) * done as f64 / self.anneal_steps as f64
    }
}

/// The teacher's parameters, each with the student parameter it follows.
pub struct Teacher {
    /// `(teacher, student)`, by name.
    pairs: Vec<(Var, Var)>,
    schedule: EmaSchedule,
}

impl Teacher {
    /// Pairs every parameter `teacher.<student_prefix>*` of `params` with its student
    /// `<student_prefix>*`, and freezes the teacher's. The teacher's parameters must exist
    /// already (built by the objective under [`PREFIX`]), one for each of the student's.
    pub fn new(params: &ParamStore, student_prefix: &str, schedule: EmaSchedule) -> Result<Self> {
        params.freeze_prefix(PREFIX);
        let all: std::collections::BTreeMap<String, Var> = params.vars().into_iter().collect();
        let students: Vec<_> = all
            .iter()
            .filter(|(k, _)| k.starts_with(student_prefix))
            .collect();
        let mut pairs = Vec::with_capacity(students.len());
        for (name, student) in students {
            let twin = format!("{PREFIX}{name}");
            let teacher = all.get(&twin).ok_or_else(|| {
                Error::Usage(format!(
                    "data2vec: the student's parameter `{name}` has no teacher `{twin}`"
                ))
            })?;
            if teacher.dims() != student.dims() {
                return Err(Error::shape(
                    format!("teacher parameter `{twin}`"),
                    format!("{:?}", student.dims()),
                    format!("{:?}", teacher.dims()),
                ));
            }
            pairs.push((teacher.clone(), student.clone()));
        }
        if pairs.is_empty() {
            return Err(Error::Usage(format!(
                "data2vec: no student parameters under `{student_prefix}`"
            )));
        }
        Ok(Self { pairs, schedule })
    }

    /// Sets the teacher to the student (before the first step of a new run).
    pub fn copy_student(&self) -> Result<()> {
        for (t, s) in &self.pairs {
            t.set(&s.as_tensor().detach().copy()?)?;
        }
        Ok(())
    }

    /// The update after optimizer step `step`: `t = d * t + (1 - d) * s`.
    pub fn update(&self, step: usize) -> Result<()> {
        let d = self.schedule.decay(step);
        if d >= 1.0 {
            return Ok(());
        }
        for (t, s) in &self.pairs {
            let next = ((t.as_tensor().detach() * d)? + (s.as_tensor().detach() * (1.0 - d))?)?;
            t.set(&next)?;
        }
        Ok(())
    }

    pub fn schedule(&self) -> EmaSchedule {
        self.schedule
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn decay_anneals_linearly_then_holds() {
        let s = EmaSchedule {
            start: 0.9,
            end: 0.99,
            anneal_steps: 10,
        };
        assert_eq!(s.decay(1), 0.9);
        assert!((s.decay(6) - 0.945).abs() < 1e-12);
        assert_eq!(s.decay(11), 0.99);
        assert_eq!(s.decay(1000), 0.99);
        let none = EmaSchedule {
            anneal_steps: 0,
            ..s
        };
        assert_eq!(none.decay(1), 0.99);
    }

    #[test]
    fn teacher_follows_the_student_and_is_not_trained() {
        let params = ParamStore::new(0);
        let vb = params.var_builder(&Device::Cpu);
        let init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
        let s = vb.get_with_hints((2, 3), "enc.w", init).unwrap();
        vb.pp("teacher")
            .get_with_hints((2, 3), "enc.w", init)
            .unwrap();
        vb.get(4, "head.b").unwrap();
        let schedule = EmaSchedule {
            start: 0.5,
            end: 0.5,
            anneal_steps: 0,
        };
        let teacher = Teacher::new(&params, "enc.", schedule).unwrap();
        let names: Vec<String> = params
            .trainable_vars()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, ["enc.w", "head.b"]);
        let get = |name: &str| {
            let vars: std::collections::BTreeMap<_, _> = params.vars().into_iter().collect();
            vars[name]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_ne!(get("teacher.enc.w"), get("enc.w"));
        teacher.copy_student().unwrap();
        assert_eq!(get("teacher.enc.w"), get("enc.w"));
        let before = get("enc.w");
        let student = params
            .vars()
            .into_iter()
            .find(|(k, _)| k == "enc.w")
            .unwrap()
            .1;
        student
            .set(&Tensor::ones((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        teacher.update(1).unwrap();
        let after = get("teacher.enc.w");
        for (a, b) in after.iter().zip(&before) {
            assert!((a - (0.5 * b + 0.5)).abs() < 1e-6);
        }
        drop(s);
    }

    #[test]
    fn a_student_parameter_without_a_teacher_is_an_error() {
        let params = ParamStore::new(0);
        let vb = params.var_builder(&Device::Cpu);
        vb.get(3, "enc.w").unwrap();
        let schedule = EmaSchedule {
            start: 0.9,
            end: 0.9,
            anneal_steps: 0,
        };
        let err = Teacher::new(&params, "enc.", schedule)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("`enc.w` has no teacher `teacher.enc.w`"),
            "{err}"
        );
    }
}
