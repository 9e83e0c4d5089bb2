//! Trainer checkpoints: everything a run needs to continue bit for bit.
//!
//! Tensors (safetensors):
//! - the f32 master weights under the model's state-dict names (for the MLP, PyTorch
//!   `nn.Sequential` names `0.weight`, `0.bias`, `2.weight`, ..., so
//!   `model.load_state_dict` takes them directly; see the `pytorch` metadata entry);
//! - the AdamW state ([`AdamW::state`](crate::optim::AdamW::state)): `optim.<param>.exp_avg`,
//!   `optim.<param>.exp_avg_sq` (f32), `optim.step` (u32), bias corrections, lr, last
//!   gradient norm;
//! - the loss scaler's state: `scaler.scale` (f32), `scaler.growth_tracker`,
//!   `scaler.skipped_steps`, `scaler.nonfinite_steps`, `scaler.last_step_skipped` (u32).
//!
//! Metadata: `format` (`halfgrad.trainer`) and `format.version`
//! ([`CHECKPOINT_VERSION`]), the model's kind (`model.kind`, [`Model::KIND`]) and line
//! (`model`), `precision`, the `policy` line, batch, seed, steps taken, the batcher
//! position (JSON), every optimizer and scaler setting, the halfgrad version.
//!
//! Format versions: 1 (written before the graph: `format` = `halfgrad.trainer.mlp/1`, no
//! `format.version`, always an MLP) loads as the MLP it is; 2 adds `format.version` and
//! `model.kind`. A later version is refused with an error naming the halfgrad that wrote
//! it and what to do.
//!
//! The 16-bit weight copy is not stored: the optimizer writes it as the master rounded to
//! nearest even, which the host reproduces bit for bit on load. Parameter gradients are
//! not stored either: every step overwrites them before use.

use super::config::{
    key, TrainConfig, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_V1, CHECKPOINT_VERSION,
};
use super::trainer::Trainer;
use crate::checkpoint::{Checkpoint, NamedTensor, TensorDType};
use crate::data::{Batcher, BatcherState};
use crate::nn::{Mlp, Model, Param};
use crate::optim::{StateData, StateTensor};
use crate::{Error, Gpu, Result};

impl<M: Model> Trainer<M> {
    /// The current state as a [`Checkpoint`] (see the module docs). Reads back every
    /// weight and optimizer tensor; call it between steps.
    pub async fn checkpoint(&self) -> Result<Checkpoint> {
        let mut ck = Checkpoint::new();
        for p in self.model.params().params() {
            ck.push_f32(&p.name, p.shape(), &p.master.read_f32().await?)?;
        }
        for t in self.optim.state().await? {
            ck.push(NamedTensor::from_state(&t)?)?;
        }
        ck.set_meta(key::FORMAT, CHECKPOINT_FORMAT);
        ck.set_meta(key::FORMAT_VERSION, CHECKPOINT_VERSION);
        ck.set_meta(key::MODEL_KIND, M::KIND);
        self.config.write_meta(&mut ck, self.model.config());
        ck.set_meta(key::STEP, self.step);
        let batcher = serde_json::to_string(&self.batcher.state())
            .map_err(|e| Error::InvalidArgument(format!("batcher state: {e}")))?;
        ck.set_meta(key::BATCHER, batcher);
        if let Some(module) = self.model.pytorch_module() {
            ck.set_meta(key::PYTORCH, module);
        }
        ck.set_meta(key::VERSION, env!("CARGO_PKG_VERSION"));
        Ok(ck)
    }

    /// Blocking [`Trainer::checkpoint`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn checkpoint_blocking(&self) -> Result<Checkpoint> {
        pollster::block_on(self.checkpoint())
    }

    /// Writes [`Trainer::checkpoint`] to `path` atomically (a failed save leaves the
    /// previous file intact). Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        self.checkpoint_blocking()?.save(path)
    }

    /// [`Trainer::from_checkpoint`] for any [`Model`]: a trainer that continues exactly
    /// where the one that wrote `ck` stopped. The checkpoint's `model.kind` must be
    /// `M::KIND`.
    pub async fn restore(gpu: &Gpu, ck: &Checkpoint) -> Result<Trainer<M>> {
        let origin = ck.origin().to_string();
        let bad = |message: String| Error::Checkpoint {
            path: origin.clone(),
            message,
        };
        let kind = checkpoint_kind(ck)?;
        if kind != M::KIND {
            return Err(bad(format!(
                "it holds a `{kind}` model, not a `{}` one: load it with that model's trainer",
                M::KIND
            )));
        }
        let (config, model_line) = TrainConfig::read_meta(ck)?;
        let model: M::Config = model_line.parse().map_err(|e: Error| bad(e.to_string()))?;
        let batcher: BatcherState = serde_json::from_str(ck.meta(key::BATCHER)?)
            .map_err(|e| bad(format!("metadata `{}`: {e}", key::BATCHER)))?;
        if batcher.batch != config.batch || batcher.seed != config.seed {
            return Err(bad(format!(
                "batcher state {batcher:?} disagrees with batch {} / seed {}",
                config.batch, config.seed
            )));
        }
        let step: u64 = ck.meta_parse(key::STEP)?;

        let mut trainer = Trainer::<M>::with_model(gpu, config, &model, batcher.len)
            .map_err(|e| bad(format!("cannot rebuild the trainer: {e}")))?;
        if trainer.model.config() != &model {
            return Err(bad(format!(
                "model `{model}` rebuilds as `{}`",
                trainer.model.config()
            )));
        }

        // The expected tensors: the parameters, then the optimizer state of a fresh
        // optimizer for this model (same names, shapes and kinds as a saved one).
        let fresh = trainer.optim.state().await?;
        let params: Vec<&Param> = trainer.model.params().params().iter().collect();
        let mut names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        names.extend(fresh.iter().map(|t| t.name.as_str()));
        ck.expect_names(&names)?;
        let mut masters = Vec::with_capacity(params.len());
        for p in &params {
            masters.push(ck.get_f32(&p.name, p.shape())?);
        }
        let mut state: Vec<StateTensor> = Vec::with_capacity(fresh.len());
        for want in &fresh {
            let t = ck.tensor(&want.name)?;
            let kind = state_dtype(want);
            if t.shape != want.shape || t.dtype != kind {
                return Err(bad(format!(
                    "tensor `{}` is {} {:?}, expected {} {:?}",
                    t.name, t.dtype, t.shape, kind, want.shape
                )));
            }
            state.push(t.to_state().map_err(|e| bad(e.to_string()))?);
        }

        // Everything checked: write. The 16-bit copy is the master rounded to nearest
        // even, exactly what the optimizer step writes.
        for (p, values) in params.iter().zip(&masters) {
            p.write_f32(values)?;
        }
        trainer
            .optim
            .load_state(&state)
            .map_err(|e| bad(format!("optimizer state: {e}")))?;
        trainer.batcher = Batcher::from_state(batcher).map_err(|e| bad(e.to_string()))?;
        trainer.step = step;
        Ok(trainer)
    }

    /// Blocking [`Trainer::restore`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn restore_blocking(gpu: &Gpu, ck: &Checkpoint) -> Result<Trainer<M>> {
        pollster::block_on(Trainer::<M>::restore(gpu, ck))
    }
}

impl Trainer<Mlp> {
    /// A trainer that continues exactly where the one that wrote `ck` stopped: same
    /// model, weights, optimizer and scaler state, step count and batch order. Reads
    /// every format version (see the module docs).
    ///
    /// Every tensor name, shape and dtype and every setting is checked before anything
    /// is used; a mismatch (a missing or extra tensor, another shape, a config entry that
    /// does not parse, another model kind, a later format) is an [`Error::Checkpoint`]
    /// naming the file and the problem. To check that a checkpoint matches the settings
    /// a run asks for, compare [`Trainer::config`] with [`TrainConfig::ensure_same`] and
    /// [`Trainer::mlp_options`] with [`MlpOptions::ensure_same`].
    ///
    /// [`MlpOptions::ensure_same`]: crate::nn::MlpOptions::ensure_same
    pub async fn from_checkpoint(gpu: &Gpu, ck: &Checkpoint) -> Result<Trainer> {
        let trainer = Trainer::<Mlp>::restore(gpu, ck).await?;
        // The model line rebuilds the MLP; the trainer's MLPs are those of MlpOptions.
        trainer.mlp_options().map_err(|e| Error::Checkpoint {
            path: ck.origin().to_string(),
            message: match e {
                Error::InvalidArgument(m) => m,
                other => other.to_string(),
            },
        })?;
        Ok(trainer)
    }

    /// Blocking [`Trainer::from_checkpoint`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_checkpoint_blocking(gpu: &Gpu, ck: &Checkpoint) -> Result<Trainer> {
        pollster::block_on(Trainer::from_checkpoint(gpu, ck))
    }

    /// Reads `path` and [`Trainer::from_checkpoint`]s it. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(gpu: &Gpu, path: &std::path::Path) -> Result<Trainer> {
        Trainer::from_checkpoint_blocking(gpu, &Checkpoint::load(path)?)
    }
}

/// The model kind of a trainer checkpoint of any readable format version, or an
/// [`Error::Checkpoint`] saying why it cannot be read.
fn checkpoint_kind(ck: &Checkpoint) -> Result<String> {
    let bad = |message: String| Error::Checkpoint {
        path: ck.origin().to_string(),
        message,
    };
    let format = ck.meta(key::FORMAT)?;
    if format == CHECKPOINT_FORMAT_V1 {
        // Version 1: written before format versions and model kinds; always an MLP.
        return Ok("mlp".to_string());
    }
    if format != CHECKPOINT_FORMAT {
        return Err(bad(format!(
            "format {format:?} is not a halfgrad trainer checkpoint ({CHECKPOINT_FORMAT:?})"
        )));
    }
    let version: u32 = ck.meta_parse(key::FORMAT_VERSION)?;
    if !(2..=CHECKPOINT_VERSION).contains(&version) {
        let writer = ck.meta(key::VERSION).unwrap_or("of an unknown version");
        return Err(bad(format!(
            "written by halfgrad {writer} in trainer format version {version}; this halfgrad \
             ({}) reads versions 1 to {CHECKPOINT_VERSION}: load it with the halfgrad that \
             wrote it or a newer one",
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(ck.meta(key::MODEL_KIND)?.to_string())
}

/// The checkpoint dtype a state tensor is stored as.
fn state_dtype(t: &StateTensor) -> TensorDType {
    match t.data {
        StateData::F32(_) => TensorDType::F32,
        StateData::U32(_) => TensorDType::U32,
    }
}
