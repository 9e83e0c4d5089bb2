//! [`Trainer`]: the model, AdamW, the loss scaler and the policy; one training step is
//! one command buffer with no readback.

use super::config::TrainConfig;
use super::schedule::{add_input_noise, LrSchedule};
use crate::amp::scaler::word;
use crate::amp::{LossScaler, Policy, Precision};
use crate::data::{Batcher, BatcherState, Dataset};
use crate::nn::{Batch, Inputs, LayerCtx, Mlp, MlpOptions, Model};
use crate::ops::matmul::{chosen_kernel, MatmulOptions};
use crate::optim::AdamW;
use crate::{DType, Error, Gpu, Result};

/// Words of the trainer's statistics buffer: the scaler state's first
/// [`word::USED`] words (copied in when statistics are read), then the loss.
mod stats_word {
    /// f32: the mean loss of the latest step's batch (copied in by every step).
    pub const LOSS: usize = 8;
    /// Words allocated (48 bytes).
    pub const ALLOCATED: usize = 12;
}

/// Statistics of a run, read from the GPU on demand ([`Trainer::stats`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainStats {
    /// Steps taken by [`Trainer::step`] (including skipped ones and those of the run a
    /// checkpoint continues).
    pub step: u64,
    /// Mean loss of the latest step's batch (NaN before the first step).
    pub loss: f32,
    /// The loss scale the next step uses (1.0 when the scaler is off).
    pub loss_scale: f32,
    /// Steps the optimizer skipped because the gradients were not finite.
    pub skipped_steps: u32,
    /// Steps whose gradients were not finite, skipped or not.
    pub nonfinite_steps: u32,
    /// Optimizer updates applied (steps minus skipped steps).
    pub optimizer_steps: u32,
    /// Global L2 norm of the latest step's unscaled gradient, before clipping.
    pub grad_norm: f32,
    /// Whether the latest step was skipped.
    pub last_step_skipped: bool,
}

/// Trains a [`Model`] with AdamW and (for f16) dynamic loss scaling; by default the
/// digits [`Mlp`] classifier ([`Trainer::new`]), any model through
/// [`Trainer::with_model`]. The run's settings ([`TrainConfig`]: precision, batch,
/// optimizer, schedule, scaler, noise, seed) and the model's architecture
/// ([`MlpOptions`], or `M::Config`) are given apart.
///
/// ```text
/// let (train, test) = Digits::load()?;
/// let (run, mlp) = (TrainConfig::default(), MlpOptions::default());
/// let mut trainer = Trainer::new_blocking(&gpu, run, &mlp, &train)?;
/// for _ in 0..1000 {
///     trainer.step_from(&train)?;            // one submission, no readback
/// }
/// let stats = trainer.stats_blocking()?;     // one readback
/// let eval = trainer.evaluate_blocking(&test)?;
/// trainer.save(Path::new("digits.safetensors"))?;
/// ```
///
/// The model is built for a fixed batch; evaluation and prediction run the same model on
/// padded chunks of that batch ([`Trainer::evaluate`]). Async methods serve the browser;
/// native code may use the `_blocking` variants.
pub struct Trainer<M: Model = Mlp> {
    pub(super) gpu: Gpu,
    /// The run's settings (the model's architecture is `model.config()`).
    pub(super) config: TrainConfig,
    pub(super) policy: Policy,
    pub(super) model: M,
    pub(super) scaler: LossScaler,
    pub(super) optim: AdamW,
    /// The order of [`Trainer::step_from`]'s batches; saved in checkpoints.
    pub(super) batcher: Batcher,
    /// Steps taken, including skipped ones.
    pub(super) step: u64,
    /// See [`stats_word`].
    stats: wgpu::Buffer,
    /// Host staging of one batch, reused every step.
    x_host: Vec<f32>,
    y_host: Vec<u32>,
}

impl<M: Model> std::fmt::Debug for Trainer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.model.config().to_string())
            .field("policy", &self.policy.to_string())
            .field("step", &self.step)
            .finish()
    }
}

impl Trainer<Mlp> {
    /// A fresh MLP classifier of `model`'s architecture ([`MlpOptions::mlp_config`]) for
    /// `train`'s feature and class counts, initialised from `config.seed`, with AdamW at
    /// step 0 and a batcher over `train` seeded alike.
    pub async fn new(
        gpu: &Gpu,
        config: TrainConfig,
        model: &MlpOptions,
        train: &dyn Dataset,
    ) -> Result<Trainer> {
        model.validate()?;
        let mlp = model.mlp_config(train.features(), train.classes());
        Trainer::with_model(gpu, config, &mlp, train.len())
    }

    /// Blocking [`Trainer::new`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(
        gpu: &Gpu,
        config: TrainConfig,
        model: &MlpOptions,
        train: &dyn Dataset,
    ) -> Result<Trainer> {
        pollster::block_on(Trainer::new(gpu, config, model, train))
    }

    /// The MLP's architecture as [`MlpOptions`] (hidden widths, activation, LayerNorm):
    /// what [`Trainer::new`] was given, or what a checkpoint holds.
    /// [`Error::InvalidArgument`] for an MLP built through [`Trainer::with_model`] that
    /// options cannot express (no biases).
    pub fn mlp_options(&self) -> Result<MlpOptions> {
        MlpOptions::from_config(self.model.config())
    }
}

impl<M: Model> Trainer<M> {
    /// A fresh `model` initialised from `config.seed`, trained with `config`'s optimizer,
    /// schedule, scaler, batch and noise settings over a training set of `train_len`
    /// samples. Nothing here waits on the GPU.
    pub fn with_model(
        gpu: &Gpu,
        config: TrainConfig,
        model: &M::Config,
        train_len: usize,
    ) -> Result<Trainer<M>> {
        config.validate()?;
        // The size plan before any buffer: a model or batch past the adapter's limits is
        // refused with the largest batch that fits, not at its first oversized tensor.
        Trainer::<M>::check_fits(gpu, &config, model)?;
        let batcher = Batcher::new(train_len, config.batch, config.seed)?;
        let policy = config.policy();
        // The scaler first: its found-inf flag and scale buffer are bound by the graph.
        let scaler = LossScaler::new(gpu, config.scaler_config())?;
        let ctx = LayerCtx::new(gpu, policy, scaler.flag());
        let model = M::build(
            &ctx,
            model,
            config.batch,
            config.seed,
            scaler.scale_buffer(),
        )?;
        if let Some(p) = model
            .params()
            .params()
            .iter()
            .enumerate()
            .find_map(|(i, p)| {
                (!model.graph().writes_param_grad(crate::nn::ParamId::new(i))).then_some(p)
            })
        {
            return Err(Error::InvalidArgument(format!(
                "parameter `{}` gets no gradient from the model's loss",
                p.name
            )));
        }
        let params: Vec<&crate::nn::Param> = model.params().params().iter().collect();
        // Backward overwrites the gradients (the graph's first write of each), so the
        // optimizer clears them only when the context accumulates.
        let optim = AdamW::with_grad_clearing(
            gpu,
            &params,
            config.adam_config(),
            &scaler,
            ctx.grad_mode.accumulate(),
        )?;
        let stats = gpu.scoped("allocating the trainer statistics", || {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("halfgrad trainer stats"),
                // Then the optimizer's per-parameter overflow counts.
                size: ((stats_word::ALLOCATED + params.len()) * 4) as u64,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let mut init = [0u32; stats_word::ALLOCATED];
        init[stats_word::LOSS] = f32::NAN.to_bits();
        gpu.queue()
            .write_buffer(&stats, 0, bytemuck::cast_slice(&init));
        let features = model.layout().inputs_per_row;
        Ok(Trainer {
            gpu: gpu.clone(),
            x_host: Vec::with_capacity(config.batch * features),
            y_host: Vec::with_capacity(config.batch),
            config,
            policy,
            model,
            scaler,
            optim,
            batcher,
            step: 0,
            stats,
        })
    }

    /// One training step on the batch `x: (batch, features)` row-major with `labels:
    /// (batch,)`: queued writes into the model's persistent input tensors, then ONE
    /// command buffer (clear found-inf; one compute pass with forward, loss, backward,
    /// AdamW and the scaler update; a 4-byte copy of the loss for [`Trainer::stats`])
    /// and one submission. Nothing is read back and no buffer is allocated: a skipped
    /// step is decided on the GPU. Errors (wrong lengths, labels out of range) are
    /// found on the host before anything is written.
    ///
    /// The learning rate follows [`TrainConfig::schedule`] (a queued 4-byte write when it
    /// changes). `x` is used as given: the input noise belongs to [`Trainer::step_from`].
    pub fn step(&mut self, x: &[f32], labels: &[u32]) -> Result<()> {
        self.step_batch(&Batch {
            inputs: Inputs::Rows(x),
            targets: labels,
        })
    }

    /// [`Trainer::step`] on any [`Batch`] (f32 rows or token ids, u32 targets).
    pub fn step_batch(&mut self, batch: &Batch<'_>) -> Result<()> {
        self.model.set_batch(batch)?;
        let lr = self.config.lr * self.config.schedule.factor(self.step);
        if lr.to_bits() != self.optim.lr().to_bits() {
            self.optim.set_lr(lr)?;
        }
        let mut enc = self.gpu.encoder("halfgrad train step");
        self.optim.clear_flag(&mut enc);
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("halfgrad train step"),
                timestamp_writes: None,
            });
            self.model.graph().encode_forward_backward(&mut pass);
            self.optim.encode_step(&mut pass);
        }
        // The loss tensor is overwritten by evaluation; keep the step's loss apart.
        enc.copy_buffer_to_buffer(
            self.model.loss().buffer(),
            0,
            &self.stats,
            (stats_word::LOSS * 4) as u64,
            4,
        );
        self.gpu.submit(enc.finish())?;
        self.step += 1;
        Ok(())
    }

    /// Draws the next batch of `train` from the trainer's seeded batcher (whose position
    /// checkpoints save), adds the input noise of [`TrainConfig::input_noise`] (a
    /// function of seed and step) and takes one [`Trainer::step`] on it. `train` must be
    /// the data set the trainer was built (or checkpointed) with: same length, features,
    /// classes.
    pub fn step_from(&mut self, train: &dyn Dataset) -> Result<()> {
        let (features, classes) = (self.features(), self.classes());
        if train.features() != features || train.classes() != classes {
            return Err(Error::shape(
                "Trainer::step_from",
                format!("a data set of {features} features and {classes} classes"),
                format!("{} features, {} classes", train.features(), train.classes()),
            ));
        }
        let (mut x, mut y) = (
            std::mem::take(&mut self.x_host),
            std::mem::take(&mut self.y_host),
        );
        let drawn = self.batcher.next_batch(train, &mut x, &mut y);
        if drawn.is_ok() {
            add_input_noise(&mut x, self.config.input_noise, self.config.seed, self.step);
        }
        let result = drawn.and_then(|()| self.step(&x, &y));
        (self.x_host, self.y_host) = (x, y);
        result
    }

    /// Reads the statistics: one small copy and one readback. Call it between steps
    /// (every few steps, not every one: it waits for the GPU).
    pub async fn stats(&self) -> Result<TrainStats> {
        Ok(self.stats_and_overflows().await?.0)
    }

    /// [`Trainer::stats`] and the parameters whose gradients held an inf or NaN, with
    /// the number of steps each did (counted on the GPU by the optimizer's check; only
    /// those that did), in the same readback.
    pub async fn stats_and_overflows(&self) -> Result<(TrainStats, Vec<(String, u32)>)> {
        let tensors = self.optim.param_names().count();
        let mut enc = self.gpu.encoder("halfgrad trainer stats");
        enc.copy_buffer_to_buffer(
            self.scaler.state_buffer(),
            0,
            &self.stats,
            0,
            (word::USED * 4) as u64,
        );
        enc.copy_buffer_to_buffer(
            self.optim.overflow_counts_buffer(),
            0,
            &self.stats,
            (stats_word::ALLOCATED * 4) as u64,
            (tensors * 4) as u64,
        );
        self.gpu.submit(enc.finish())?;
        let bytes = self
            .gpu
            .read_buffer(&self.stats, ((stats_word::ALLOCATED + tensors) * 4) as u64)
            .await?;
        let w: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let overflows = self.optim.name_overflows(&w[stats_word::ALLOCATED..]);
        Ok((self.stats_from_words(&w), overflows))
    }

    /// Blocking [`Trainer::stats_and_overflows`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn stats_and_overflows_blocking(&self) -> Result<(TrainStats, Vec<(String, u32)>)> {
        pollster::block_on(self.stats_and_overflows())
    }

    fn stats_from_words(&self, w: &[u32]) -> TrainStats {
        TrainStats {
            step: self.step,
            loss: f32::from_bits(w[stats_word::LOSS]),
            loss_scale: f32::from_bits(w[word::SCALE]),
            skipped_steps: w[word::SKIPPED],
            nonfinite_steps: w[word::NONFINITE],
            optimizer_steps: w[word::STEP],
            grad_norm: f32::from_bits(w[word::LAST_NORM]),
            last_step_skipped: w[word::LAST_SKIPPED] != 0,
        }
    }

    /// Blocking [`Trainer::stats`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn stats_blocking(&self) -> Result<TrainStats> {
        pollster::block_on(self.stats())
    }

    /// The precision path the matrix products take on this device: `"f32"`, `"bf16"`,
    /// `"f16 native"` (shader-f16), `"f16 packed"` (u32 words, every adapter) or
    /// `"f16 cooperative matrix"` (when any of the model's products runs on the
    /// cooperative-matrix kernel; shapes that kernel would have to stage stay tiled).
    pub fn describe_path(&self) -> &'static str {
        if self.config.precision == Precision::F16 && self.uses_coop() {
            "f16 cooperative matrix"
        } else {
            describe_path(&self.gpu, self.config.precision)
        }
    }

    /// Whether any matrix product of the model's graph runs on a cooperative-matrix
    /// kernel.
    fn uses_coop(&self) -> bool {
        use crate::ops::matmul::{
            COOP, COOP_COPIED, COOP_COPIED_F32, COOP_DIRECT, COOP_DIRECT_F32, COOP_TILE,
            COOP_TILE_F32,
        };
        let graph = self.model.graph();
        [
            &COOP,
            &COOP_TILE,
            &COOP_TILE_F32,
            &COOP_DIRECT,
            &COOP_DIRECT_F32,
            &COOP_COPIED,
            &COOP_COPIED_F32,
        ]
        .iter()
        .any(|k| graph.uses_kernel(k.name))
    }

    /// The precision policy (see [`Policy`]'s one-line `Display`).
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The settings (`lr` is the base learning rate; [`Trainer::lr`] the scheduled one).
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    pub fn optimizer(&self) -> &AdamW {
        &self.optim
    }

    pub fn scaler(&self) -> &LossScaler {
        &self.scaler
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Steps taken (including skipped ones).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The batcher's position (for [`Trainer::step_from`]).
    pub fn batcher_state(&self) -> BatcherState {
        self.batcher.state()
    }

    /// The learning rate the latest step used (the base one before the first step).
    pub fn lr(&self) -> f32 {
        self.optim.lr()
    }

    /// Sets the base learning rate from the next step on (the schedule scales it).
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        let mut config = self.config.clone();
        config.lr = lr;
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Replaces the learning-rate schedule from the next step on (e.g. one
    /// [`LrSchedule::stretched_to`] a later end when a resumed run trains longer); the
    /// checkpoint records it, so a later resume follows it too.
    pub fn set_schedule(&mut self, schedule: LrSchedule) -> Result<()> {
        let mut config = self.config.clone();
        config.schedule = schedule;
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Inputs per row of the model (features, or tokens per sequence).
    pub fn features(&self) -> usize {
        self.model.layout().inputs_per_row
    }

    /// Number of classes (targets are below it).
    pub fn classes(&self) -> usize {
        self.model.layout().classes
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.model.params().num_scalars()
    }
}

/// The matrix-product path of `precision` on `gpu` for products the cooperative-matrix
/// kernel takes directly (see [`Trainer::describe_path`] for a model's own products).
pub fn describe_path(gpu: &Gpu, precision: Precision) -> &'static str {
    match precision {
        Precision::F32 => "f32",
        Precision::BF16 => "bf16",
        Precision::F16 => {
            let coop = chosen_kernel(gpu, DType::F16, DType::F16, &MatmulOptions::default());
            if coop == Ok("coop") {
                "f16 cooperative matrix"
            } else if gpu.caps().shader_f16 {
                "f16 native"
            } else {
                "f16 packed"
            }
        }
    }
}
