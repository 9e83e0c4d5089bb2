//! Choosing the next token from a row of logits on the host: temperature and top-k with
//! a seeded generator, so the same seed gives the same text on every platform.

use crate::nn::init::unit_f64;
use crate::rng::SplitMix64;
use crate::{Error, Result};

/// How the next token is drawn from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleConfig {
    /// Divides the logits before the softmax; 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Draw among the `top_k` most likely tokens only; 0: the whole vocabulary.
    pub top_k: usize,
}

impl Default for SampleConfig {
    /// Temperature 0.8, top-k 40 (nanoGPT's `sample.py` uses 0.8 and 200 over a
    /// 50k-token vocabulary).
    fn default() -> Self {
        SampleConfig {
            temperature: 0.8,
            top_k: 40,
        }
    }
}

impl SampleConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "sampling temperature {} must be finite and >= 0",
                self.temperature
            )));
        }
        Ok(())
    }

    /// The next token for one row of `logits` (one per vocabulary entry): the
    /// candidates are the `top_k` largest logits (ties broken by the lower id), their
    /// softmax at `temperature` is computed in f64, and one uniform draw from `rng`
    /// picks along its cumulative sum. Greedy (temperature 0) draws nothing. A NaN
    /// logit is an [`Error::InvalidArgument`] (the model diverged).
    pub fn pick(&self, logits: &[f32], rng: &mut SplitMix64) -> Result<u32> {
        self.validate()?;
        if logits.is_empty() {
            return Err(Error::InvalidArgument("no logits to sample from".into()));
        }
        if let Some(i) = logits.iter().position(|x| x.is_nan()) {
            return Err(Error::InvalidArgument(format!(
                "logit {i} is NaN: the model's output is not finite"
            )));
        }
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        // Descending logits; equal logits keep ascending ids (a stable, total order).
        order.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        if self.temperature == 0.0 {
            return Ok(order[0]);
        }
        let k = if self.top_k == 0 {
            order.len()
        } else {
            self.top_k.min(order.len())
        };
        let top = &order[..k];
        let max = logits[top[0] as usize] as f64;
        let t = self.temperature as f64;
        let weights: Vec<f64> = top
            .iter()
            .map(|&i| ((logits[i as usize] as f64 - max) / t).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut u = unit_f64(rng) * total;
        for (&id, w) in top.iter().zip(&weights) {
            if u < *w {
                return Ok(id);
            }
            u -= w;
        }
        // Rounding left u at the very end: the last candidate with any weight.
        Ok(top[weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_and_seeded() {
        let logits = [0.0, 3.0, 1.0, 3.0, -1.0];
        let greedy = SampleConfig {
            temperature: 0.0,
            top_k: 0,
        };
        assert_eq!(greedy.pick(&logits, &mut SplitMix64::new(0)).unwrap(), 1);
        let top2 = SampleConfig {
            temperature: 1.0,
            top_k: 2,
        };
        let mut rng = SplitMix64::new(4);
        let mut counts = [0usize; 5];
        for _ in 0..2000 {
            counts[top2.pick(&logits, &mut rng).unwrap() as usize] += 1;
        }
        assert_eq!(counts[0] + counts[2] + counts[4], 0);
        assert!(counts[1] > 850 && counts[3] > 850, "{counts:?}");
        let draw = |seed| {
            let mut r = SplitMix64::new(seed);
            (0..50)
                .map(|_| SampleConfig::default().pick(&logits, &mut r).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        assert!(SampleConfig::default()
            .pick(&[1.0, f32::NAN], &mut rng)
            .is_err());
        assert!(SampleConfig::default().pick(&[], &mut rng).is_err());
        let hot = SampleConfig {
            temperature: f32::INFINITY,
            top_k: 0,
        };
        assert!(hot.pick(&logits, &mut rng).is_err());
    }
}
