//! [`TrainConfig`]: a training run's settings for any model (precision, batch, optimizer,
//! schedule, scaler, input noise, seed), with the digits defaults, and its string form in
//! checkpoint metadata. The model's own architecture is its config (`M::Config`; for the
//! digits MLP, [`MlpOptions`](crate::nn::MlpOptions)).

use super::schedule::LrSchedule;
use crate::amp::{Policy, Precision, ScalerConfig};
use crate::checkpoint::Checkpoint;
use crate::optim::AdamConfig;
use crate::{Error, Result};

/// A training run's settings, whatever the model: precision, batch, optimizer, schedule,
/// scaler, input noise and seed. The model's architecture is separate: the trainer takes
/// it beside this config ([`MlpOptions`](crate::nn::MlpOptions) for the digits MLP,
/// `M::Config` for any [`Model`](crate::nn::Model)).
///
/// [`Default`] is the run `halfgrad train` makes on the digits with the default
/// [`MlpOptions`](crate::nn::MlpOptions) (>= 95% test accuracy in every precision, see
/// the README's Training section): f16; batch 64; AdamW lr 3e-3 with 50 warmup steps and
/// cosine decay over 1,500 steps, betas (0.9, 0.999), weight decay 1e-4, gradient
/// clipping at norm 1.0; Gaussian input noise of std 0.25 on training batches; seed 0;
/// the precision's default loss scaler (dynamic for f16, off for bf16 and f32), skipping
/// any step with non-finite gradients ([`TrainConfig::default_scaler`]).
///
/// Without the input noise (and the MLP's LayerNorm) the model memorises the 1,437
/// training digits within a few hundred steps and stays near 91% on the test writers.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Storage and compute precision of activations and matrix-product operands.
    pub precision: Precision,
    /// Samples per step.
    pub batch: usize,
    /// AdamW base learning rate (the schedule scales it).
    pub lr: f32,
    /// How the learning rate moves with the step.
    pub schedule: LrSchedule,
    /// AdamW (beta1, beta2).
    pub betas: (f32, f32),
    /// AdamW epsilon.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub max_grad_norm: Option<f32>,
    /// Std of the Gaussian noise added to every training input drawn by
    /// [`Trainer::step_from`](super::Trainer::step_from) (a regulariser; 0 turns it off).
    /// The noise depends only on (seed, step), so a resumed run repeats it.
    pub input_noise: f32,
    /// Seeds the parameter initialisation, the batch order and the input noise.
    pub seed: u64,
    /// Loss scaling; `None` is [`TrainConfig::default_scaler`].
    pub scaler: Option<ScalerConfig>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            precision: Precision::F16,
            batch: 64,
            lr: 3e-3,
            schedule: LrSchedule::WarmupCosine {
                warmup: 50,
                total: 1500,
            },
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-4,
            max_grad_norm: Some(1.0),
            input_noise: 0.25,
            seed: 0,
            scaler: None,
        }
    }
}

/// Metadata keys of a trainer checkpoint.
pub(crate) mod key {
    pub const FORMAT: &str = "format";
    pub const FORMAT_VERSION: &str = "format.version";
    pub const MODEL_KIND: &str = "model.kind";
    pub const MODEL: &str = "model";
    pub const PRECISION: &str = "precision";
    pub const POLICY: &str = "policy";
    pub const PYTORCH: &str = "pytorch";
    pub const BATCH: &str = "train.batch";
    pub const SEED: &str = "train.seed";
    pub const STEP: &str = "train.step";
    pub const BATCHER: &str = "train.batcher";
    pub const SCHEDULE: &str = "train.schedule";
    pub const INPUT_NOISE: &str = "train.input_noise";
    pub const VERSION: &str = "halfgrad.version";
}

/// The `format` metadata value of a trainer checkpoint (with `format.version`).
pub const CHECKPOINT_FORMAT: &str = "halfgrad.trainer";

/// The format version this halfgrad writes (`format.version`); it reads 1 to this.
pub const CHECKPOINT_VERSION: u32 = 2;

/// The `format` of version-1 checkpoints (MLP only, no `format.version`).
pub const CHECKPOINT_FORMAT_V1: &str = "halfgrad.trainer.mlp/1";

impl TrainConfig {
    /// The same config in another precision (and that precision's default scaler, unless
    /// one was set explicitly).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The loss scaler configuration this run uses ([`TrainConfig::default_scaler`]
    /// unless one was set).
    pub fn scaler_config(&self) -> ScalerConfig {
        self.scaler
            .clone()
            .unwrap_or_else(|| TrainConfig::default_scaler(self.precision))
    }

    /// A run's default loss scaler: the precision's ([`ScalerConfig::for_precision`]:
    /// dynamic scaling for f16, off for bf16 and f32) that also skips a step whose
    /// gradients are not finite when scaling is off. So NaN or inf in the data (or an
    /// overflow) never reaches the weights in any precision; the step is counted in
    /// [`TrainStats::skipped_steps`](super::TrainStats). A run without such steps
    /// follows PyTorch's trajectory exactly either way.
    pub fn default_scaler(precision: Precision) -> ScalerConfig {
        ScalerConfig {
            skip_nonfinite_when_disabled: true,
            ..ScalerConfig::for_precision(precision)
        }
    }

    /// The AdamW hyperparameters.
    pub fn adam_config(&self) -> AdamConfig {
        AdamConfig {
            lr: self.lr,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
        }
    }

    /// The precision policy (loss scaling on when the scaler is enabled).
    pub fn policy(&self) -> Policy {
        Policy::new(self.precision).with_loss_scaling(self.scaler_config().enabled)
    }

    /// Checks ranges (batch >= 1, input noise finite and >= 0) and the schedule's,
    /// optimizer's and scaler's own. The model's are its config's
    /// ([`MlpOptions::validate`](crate::nn::MlpOptions::validate)).
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::InvalidArgument("batch must be at least 1".into()));
        }
        if !(self.input_noise.is_finite() && self.input_noise >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "input noise {} must be finite and >= 0",
                self.input_noise
            )));
        }
        self.schedule.validate()?;
        self.adam_config().validate()?;
        self.scaler_config().validate()
    }

    /// Writes the config into checkpoint metadata (model line, precision, batch, seed,
    /// schedule, input noise, `optim.*` (with the base lr) and `scaler.*`; floats
    /// round-trip exactly).
    pub(crate) fn write_meta(&self, ck: &mut Checkpoint, model: &impl std::fmt::Display) {
        ck.set_meta(key::MODEL, model);
        ck.set_meta(key::PRECISION, self.precision);
        ck.set_meta(key::POLICY, self.policy());
        ck.set_meta(key::BATCH, self.batch);
        ck.set_meta(key::SEED, self.seed);
        ck.set_meta(key::SCHEDULE, self.schedule);
        ck.set_meta(key::INPUT_NOISE, format!("{:?}", self.input_noise));
        let adam = self.adam_config();
        for (k, v) in adam.to_kv().into_iter().chain(self.scaler_config().to_kv()) {
            ck.set_meta(k, v);
        }
    }

    /// Reads the config and the model line written by [`TrainConfig::write_meta`] (the
    /// caller parses the model line as its model's config). Every missing or unparsable
    /// entry is an [`Error::Checkpoint`] naming the file.
    pub(crate) fn read_meta(ck: &Checkpoint) -> Result<(TrainConfig, String)> {
        let as_ck = |e: Error| Error::Checkpoint {
            path: ck.origin().to_string(),
            message: e.to_string(),
        };
        let model = ck.meta(key::MODEL)?.to_string();
        let precision: Precision = ck.meta(key::PRECISION)?.parse().map_err(as_ck)?;
        let kv: Vec<(String, String)> = ck
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("optim.") || k.starts_with("scaler."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let adam = AdamConfig::default().with_kv(&kv).map_err(as_ck)?;
        let scaler = ScalerConfig::default().with_kv(&kv).map_err(as_ck)?;
        let config = TrainConfig {
            precision,
            batch: ck.meta_parse(key::BATCH)?,
            lr: adam.lr,
            schedule: ck.meta(key::SCHEDULE)?.parse().map_err(as_ck)?,
            betas: adam.betas,
            eps: adam.eps,
            weight_decay: adam.weight_decay,
            max_grad_norm: adam.max_grad_norm,
            input_noise: ck.meta_parse(key::INPUT_NOISE)?,
            seed: ck.meta_parse(key::SEED)?,
            // Explicit only when it differs from the precision's default, so a config
            // read back compares equal to the one that wrote it.
            scaler: (scaler != TrainConfig::default_scaler(precision)).then_some(scaler),
        };
        config.validate().map_err(as_ck)?;
        Ok((config, model))
    }

    /// Checks that `requested` (what a resumed run was asked for) equals this config
    /// (what the checkpoint at `origin` holds). The first difference is an
    /// [`Error::Checkpoint`] naming the setting and both values, e.g. resuming with
    /// another `--batch`. The model's part: its config's (for the MLP,
    /// [`MlpOptions::ensure_same`](crate::nn::MlpOptions::ensure_same)).
    pub fn ensure_same(&self, requested: &TrainConfig, origin: &str) -> Result<()> {
        let mismatch = |what: &str, saved: String, asked: String| {
            Err(Error::setting_mismatch(origin, what, saved, asked))
        };
        let (s, r) = (self, requested);
        if s.precision != r.precision {
            return mismatch(
                "precision",
                s.precision.to_string(),
                r.precision.to_string(),
            );
        }
        if s.batch != r.batch {
            return mismatch("batch size", s.batch.to_string(), r.batch.to_string());
        }
        if s.seed != r.seed {
            return mismatch("seed", s.seed.to_string(), r.seed.to_string());
        }
        if s.schedule != r.schedule {
            return mismatch(
                "learning-rate schedule",
                s.schedule.to_string(),
                r.schedule.to_string(),
            );
        }
        if s.input_noise.to_bits() != r.input_noise.to_bits() {
            return mismatch(
                "input noise",
                s.input_noise.to_string(),
                r.input_noise.to_string(),
            );
        }
        if s.adam_config() != r.adam_config() {
            return mismatch(
                "optimizer settings",
                format!("{:?}", s.adam_config()),
                format!("{:?}", r.adam_config()),
            );
        }
        if s.scaler_config() != r.scaler_config() {
            return mismatch(
                "loss scaler settings",
                format!("{:?}", s.scaler_config()),
                format!("{:?}", r.scaler_config()),
            );
        }
        Ok(())
    }
}
