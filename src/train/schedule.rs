//! Learning-rate schedules and training-input noise: host-side functions of the step
//! number, so a resumed run repeats them exactly.

use crate::data::SplitMix64;
use crate::{Error, Result};
use std::fmt;

/// How the learning rate moves with the step: `lr(step) = base_lr * factor(step)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrSchedule {
    /// The base learning rate throughout.
    Constant,
    /// Linear warmup over `warmup` steps (step `s` < `warmup` uses `(s + 1) / warmup`),
    /// then half a cosine from 1 down to 0 at step `total`; 0 after `total`.
    /// (PyTorch: `LinearLR` then `CosineAnnealingLR(eta_min=0)`.)
    WarmupCosine { warmup: u64, total: u64 },
}

impl LrSchedule {
    /// The multiplier of the base learning rate for 0-based `step`, in [0, 1].
    pub fn factor(&self, step: u64) -> f32 {
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::WarmupCosine { warmup, total } => {
                if step < warmup {
                    ((step + 1) as f64 / warmup as f64) as f32
                } else if step >= total {
                    0.0
                } else {
                    let t = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                    (0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
                }
            }
        }
    }

    /// The schedule stretched to end at step `total` instead: the same warmup, the
    /// cosine's end moved to `total`. A run resumed at step `r` with it follows, from `r`
    /// on, the curve a run started with `total` steps would have followed (so the
    /// learning rate picks up again when `r` is at or past the old end, where it was 0).
    /// A constant schedule has no end to move (`InvalidArgument`), nor does a `total` that
    /// does not leave room for the warmup.
    pub fn stretched_to(self, total: u64) -> Result<LrSchedule> {
        match self {
            LrSchedule::Constant => Err(Error::InvalidArgument(
                "a constant learning rate has no end to stretch".into(),
            )),
            LrSchedule::WarmupCosine { warmup, .. } => {
                let stretched = LrSchedule::WarmupCosine { warmup, total };
                stretched.validate()?;
                Ok(stretched)
            }
        }
    }

    /// The last step the schedule trains at a learning rate above 0 (`None`: never
    /// ends).
    pub fn end(&self) -> Option<u64> {
        match *self {
            LrSchedule::Constant => None,
            LrSchedule::WarmupCosine { total, .. } => Some(total),
        }
    }

    pub fn validate(&self) -> Result<()> {
        match *self {
            LrSchedule::WarmupCosine { warmup, total } if warmup >= total && total > 0 => {
                Err(Error::InvalidArgument(format!(
                    "lr schedule: warmup {warmup} must be shorter than the {total} steps"
                )))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for LrSchedule {
    /// `constant` or `cosine:warmup=50,total=1500` (the checkpoint metadata form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LrSchedule::Constant => f.write_str("constant"),
            LrSchedule::WarmupCosine { warmup, total } => {
                write!(f, "cosine:warmup={warmup},total={total}")
            }
        }
    }
}

impl std::str::FromStr for LrSchedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "lr schedule `{s}` (expected `constant` or `cosine:warmup=W,total=T`)"
            ))
        };
        let s = s.trim();
        if s == "constant" {
            return Ok(LrSchedule::Constant);
        }
        let rest = s.strip_prefix("cosine:").ok_or_else(bad)?;
        let (mut warmup, mut total) = (None, None);
        for part in rest.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            let v: u64 = v.trim().parse().map_err(|_| bad())?;
            match k.trim() {
                "warmup" => warmup = Some(v),
                "total" => total = Some(v),
                _ => return Err(bad()),
            }
        }
        let schedule = LrSchedule::WarmupCosine {
            warmup: warmup.ok_or_else(bad)?,
            total: total.ok_or_else(bad)?,
        };
        schedule.validate()?;
        Ok(schedule)
    }
}

/// Adds Gaussian noise of standard deviation `std` to `x`, drawn from a SplitMix64
/// stream that depends only on `(seed, step)` (Box-Muller), so every run, resumed or
/// not, draws the same noise for the same step.
pub(crate) fn add_input_noise(x: &mut [f32], std: f32, seed: u64, step: u64) {
    if std == 0.0 {
        return;
    }
    let mut rng = SplitMix64::new(
        SplitMix64::mix(seed ^ 0x6E6F_6973_655F_7374) ^ SplitMix64::mix(step.wrapping_add(1)),
    );
    for pair in x.chunks_mut(2) {
        // u1 in (0, 1]: ln(u1) is finite.
        let u1 = 1.0 - rng.next_f32() as f64;
        let u2 = rng.next_f32() as f64;
        let r = (-2.0 * u1.ln()).sqrt() * f64::from(std);
        let angle = 2.0 * std::f64::consts::PI * u2;
        pair[0] += (r * angle.cos()) as f32;
        if let Some(second) = pair.get_mut(1) {
            *second += (r * angle.sin()) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_then_decays_to_zero() {
        let s = LrSchedule::WarmupCosine {
            warmup: 10,
            total: 110,
        };
        assert_eq!(s.factor(0), 0.1);
        assert_eq!(s.factor(9), 1.0);
        assert_eq!(s.factor(10), 1.0);
        assert!((s.factor(60) - 0.5).abs() < 1e-6);
        assert!(s.factor(109) > 0.0 && s.factor(109) < 1e-3);
        assert_eq!(s.factor(110), 0.0);
        assert_eq!(s.factor(1000), 0.0);
        assert_eq!(LrSchedule::Constant.factor(12345), 1.0);
        for text in ["constant", "cosine:warmup=10,total=110"] {
            assert_eq!(text.parse::<LrSchedule>().unwrap().to_string(), text);
        }
        assert!("cosine:warmup=10".parse::<LrSchedule>().is_err());
        assert!("cosine:warmup=10,total=5".parse::<LrSchedule>().is_err());
        assert!("linear".parse::<LrSchedule>().is_err());
    }

    #[test]
    fn stretching_moves_the_end_and_keeps_the_warmup() {
        let s = LrSchedule::WarmupCosine {
            warmup: 2,
            total: 25,
        };
        let t = s.stretched_to(60).unwrap();
        assert_eq!(
            t,
            LrSchedule::WarmupCosine {
                warmup: 2,
                total: 60
            }
        );
        assert_eq!((s.end(), t.end()), (Some(25), Some(60)));
        assert_eq!(s.factor(25), 0.0);
        assert!(t.factor(25) > 0.5 && t.factor(59) > 0.0 && t.factor(60) == 0.0);
        assert!(LrSchedule::Constant.stretched_to(60).is_err());
        assert!(s.stretched_to(2).is_err());
        assert_eq!(LrSchedule::Constant.end(), None);
    }

    #[test]
    fn noise_depends_only_on_seed_and_step() {
        let mut a = vec![0f32; 4001];
        let mut b = vec![0f32; 4001];
        add_input_noise(&mut a, 0.5, 3, 7);
        add_input_noise(&mut b, 0.5, 3, 7);
        assert_eq!(a, b);
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.05 && (var.sqrt() - 0.5).abs() < 0.05,
            "{mean} {var}"
        );
        add_input_noise(&mut b, 0.5, 3, 8);
        assert_ne!(a, b);
        let mut c = vec![1f32; 3];
        add_input_noise(&mut c, 0.0, 3, 7);
        assert_eq!(c, [1.0; 3]);
    }
}
