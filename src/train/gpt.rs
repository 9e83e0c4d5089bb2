//! [`GptTrainer`]: trains a [`GptGraph`] on a [`TextData`] with AdamW, the warmup +
//! cosine schedule, gradient clipping and (for f16) dynamic loss scaling; evaluates the
//! mean validation loss over fixed windows; samples on the GPU; saves and resumes bit for
//! bit.
//!
//! One training step is one command buffer and one submission with no readback, as for
//! the MLP: the batch (tokens, targets, the token index of the embedding's backward) goes
//! in with queued writes, then one compute pass records forward, loss, backward, AdamW
//! and the scaler update. Three graphs share the parameters: training (B sequences of
//! T), evaluation (forward only, B x T) and sampling (forward only, 1 x T, built on
//! first use).

use super::schedule::LrSchedule;
use super::trainer::{describe_path, TrainStats};
use crate::amp::scaler::word;
use crate::amp::{constant_scale, LossScaler, Policy, Precision, ScalerConfig};
use crate::checkpoint::{Checkpoint, NamedTensor, TensorDType};
use crate::data::text::{Split, TextBatcher, TextBatcherState, TextData};
use crate::data::SplitMix64;
use crate::nn::gpt::{upload_params, GptConfig, GptGraph, GptWeights, SampleConfig};
use crate::nn::{LayerCtx, ParamStore};
use crate::optim::{AdamConfig, AdamW, StateData, StateTensor};
use crate::{Error, Gpu, Result};

/// The `format` metadata value of a GPT trainer checkpoint.
pub const GPT_CHECKPOINT_FORMAT: &str = "halfgrad.trainer.gpt/1";

/// Metadata keys of a GPT checkpoint (besides `optim.*` and `scaler.*`).
mod key {
    pub const FORMAT: &str = "format";
    pub const MODEL: &str = "model";
    pub const PRECISION: &str = "precision";
    pub const POLICY: &str = "policy";
    pub const BATCH: &str = "train.batch";
    pub const SEED: &str = "train.seed";
    pub const STEP: &str = "train.step";
    pub const SCHEDULE: &str = "train.schedule";
    pub const BATCHER: &str = "train.batcher";
    pub const EVAL_WINDOWS: &str = "train.eval_windows";
    pub const DATA: &str = "data.name";
    pub const DATA_LEN: &str = "data.bytes";
    pub const VERSION: &str = "halfgrad.version";
}

/// A GPT training run's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GptTrainConfig {
    pub model: GptConfig,
    pub precision: Precision,
    /// Sequences per step.
    pub batch: usize,
    /// AdamW peak learning rate.
    pub lr: f32,
    pub schedule: LrSchedule,
    pub betas: (f32, f32),
    pub eps: f32,
    pub weight_decay: f32,
    pub max_grad_norm: Option<f32>,
    /// Seeds the initialisation and the batch draws.
    pub seed: u64,
    /// Validation windows per evaluation (evenly spaced; 0: all).
    pub eval_windows: usize,
    /// Loss scaling; `None`: the precision's default ([`super::TrainConfig::default_scaler`]).
    pub scaler: Option<ScalerConfig>,
}

impl GptTrainConfig {
    /// The default run on the tiny preset: f16, batch 16, AdamW lr 3e-3 with betas
    /// (0.9, 0.99), no weight decay, clipping at 1, warmup min(100, steps / 10) then a
    /// cosine to 0 at `steps`, seed 0, 64 evaluation windows.
    pub fn tiny(steps: u64) -> GptTrainConfig {
        GptTrainConfig {
            model: GptConfig::tiny(),
            precision: Precision::F16,
            batch: 16,
            lr: 3e-3,
            schedule: LrSchedule::WarmupCosine {
                warmup: (steps / 10).min(100),
                total: steps,
            },
            betas: (0.9, 0.99),
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            seed: 0,
            eval_windows: 64,
            scaler: None,
        }
    }

    pub fn scaler_config(&self) -> ScalerConfig {
        self.scaler
            .clone()
            .unwrap_or_else(|| super::TrainConfig::default_scaler(self.precision))
    }

    pub fn adam_config(&self) -> AdamConfig {
        AdamConfig {
            lr: self.lr,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
        }
    }

    pub fn policy(&self) -> Policy {
        Policy::new(self.precision).with_loss_scaling(self.scaler_config().enabled)
    }

    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        if self.batch == 0 {
            return Err(Error::InvalidArgument("batch must be at least 1".into()));
        }
        self.schedule.validate()?;
        self.adam_config().validate()?;
        self.scaler_config().validate()
    }

    fn write_meta(&self, ck: &mut Checkpoint) {
        ck.set_meta(key::MODEL, self.model);
        ck.set_meta(key::PRECISION, self.precision);
        ck.set_meta(key::POLICY, self.policy());
        ck.set_meta(key::BATCH, self.batch);
        ck.set_meta(key::SEED, self.seed);
        ck.set_meta(key::SCHEDULE, self.schedule);
        ck.set_meta(key::EVAL_WINDOWS, self.eval_windows);
        for (k, v) in self
            .adam_config()
            .to_kv()
            .into_iter()
            .chain(self.scaler_config().to_kv())
        {
            ck.set_meta(k, v);
        }
    }

    fn read_meta(ck: &Checkpoint) -> Result<GptTrainConfig> {
        let as_ck = |e: Error| Error::Checkpoint {
            path: ck.origin().to_string(),
            message: e.to_string(),
        };
        let model: GptConfig = ck.meta(key::MODEL)?.parse().map_err(as_ck)?;
        let precision: Precision = ck.meta(key::PRECISION)?.parse().map_err(as_ck)?;
        let kv: Vec<(String, String)> = ck
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("optim.") || k.starts_with("scaler."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let adam = AdamConfig::default().with_kv(&kv).map_err(as_ck)?;
        let scaler = ScalerConfig::default().with_kv(&kv).map_err(as_ck)?;
        let config = GptTrainConfig {
            model,
            precision,
            batch: ck.meta_parse(key::BATCH)?,
            lr: adam.lr,
            schedule: ck.meta(key::SCHEDULE)?.parse().map_err(as_ck)?,
            betas: adam.betas,
            eps: adam.eps,
            weight_decay: adam.weight_decay,
            max_grad_norm: adam.max_grad_norm,
            seed: ck.meta_parse(key::SEED)?,
            eval_windows: ck.meta_parse(key::EVAL_WINDOWS)?,
            scaler: (scaler != super::TrainConfig::default_scaler(precision)).then_some(scaler),
        };
        config.validate().map_err(as_ck)?;
        Ok(config)
    }
}

/// Words of the statistics buffer: the scaler state's first [`word::USED`] words, then
/// the loss.
mod stats_word {
    pub const LOSS: usize = 8;
    pub const ALLOCATED: usize = 12;
}

/// The result of [`GptTrainer::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptEvaluation {
    /// Mean next-token cross-entropy (natural log) over every target of the windows.
    pub loss: f64,
    pub windows: usize,
    pub tokens: usize,
}

/// Trains a GPT; see the module docs.
pub struct GptTrainer {
    gpu: Gpu,
    config: GptTrainConfig,
    policy: Policy,
    store: ParamStore,
    scaler: LossScaler,
    optim: AdamW,
    train: GptGraph,
    eval: GptGraph,
    sampler: Option<GptGraph>,
    /// A scale of 1 for the forward-only graphs (their backward never runs).
    unit_scale: wgpu::Buffer,
    batcher: TextBatcher,
    step: u64,
    stats: wgpu::Buffer,
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

impl std::fmt::Debug for GptTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GptTrainer")
            .field("model", &self.config.model.to_string())
            .field("precision", &self.config.precision)
            .field("step", &self.step)
            .finish()
    }
}

impl GptTrainer {
    /// A fresh run: GPT-2's initialisation from `config.seed`, or `init` (e.g. a Hugging
    /// Face GPT-2 read by [`crate::nn::gpt::hf::load`]; its config must be `config.model`).
    pub fn new(gpu: &Gpu, config: GptTrainConfig, init: Option<&GptWeights>) -> Result<GptTrainer> {
        config.validate()?;
        let t = config.model.block;
        // Refuse a model past the device's limits before building host-side weights.
        crate::nn::gpt::check_fits(
            gpu,
            &config.model,
            config.batch,
            t,
            config.precision.compute_dtype(),
        )?;
        let weights = match init {
            Some(w) if w.config() != &config.model => {
                return Err(Error::InvalidArgument(format!(
                    "initial weights of model {} do not fit the run's model {}",
                    w.config(),
                    config.model
                )))
            }
            Some(w) => w.clone(),
            None => GptWeights::init(&config.model, config.seed)?,
        };
        let policy = config.policy();
        let scaler = LossScaler::new(gpu, config.scaler_config())?;
        let ctx = LayerCtx::new(gpu, policy, scaler.flag());
        let store = upload_params(&ctx, &weights)?;
        drop(weights);
        let train = GptGraph::new(
            &ctx,
            &config.model,
            &store,
            (config.batch, t),
            scaler.scale_buffer(),
            true,
        )?;
        let unit_scale = constant_scale(gpu, 1.0)?;
        let eval = GptGraph::new(
            &ctx,
            &config.model,
            &store,
            (config.batch, t),
            &unit_scale,
            false,
        )?;
        let params: Vec<_> = store.params().iter().collect();
        let optim = AdamW::new(gpu, &params, config.adam_config(), &scaler)?;
        let stats = gpu.scoped("allocating the trainer statistics", || {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("halfgrad gpt trainer stats"),
                size: (stats_word::ALLOCATED * 4) as u64,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let mut init_words = [0u32; stats_word::ALLOCATED];
        init_words[stats_word::LOSS] = f32::NAN.to_bits();
        gpu.queue()
            .write_buffer(&stats, 0, bytemuck::cast_slice(&init_words));
        Ok(GptTrainer {
            gpu: gpu.clone(),
            batcher: TextBatcher::new(config.batch, config.seed)?,
            inputs: Vec::with_capacity(config.batch * t),
            targets: Vec::with_capacity(config.batch * t),
            config,
            policy,
            store,
            scaler,
            optim,
            train,
            eval,
            sampler: None,
            unit_scale,
            step: 0,
            stats,
        })
    }

    fn check_data(&self, data: &TextData) -> Result<()> {
        if data.block() != self.config.model.block {
            return Err(Error::InvalidArgument(format!(
                "{}: windows of {} tokens, the model's block is {}",
                data.name(),
                data.block(),
                self.config.model.block
            )));
        }
        Ok(())
    }

    /// One training step on the next batch of `data`'s training split: queued writes,
    /// one command buffer, one submission, no readback. `data` must keep the same bytes
    /// for the whole run (a resumed run is checked against the checkpoint's).
    pub fn step(&mut self, data: &TextData) -> Result<()> {
        self.check_data(data)?;
        let (mut x, mut y) = (
            std::mem::take(&mut self.inputs),
            std::mem::take(&mut self.targets),
        );
        let state = self.batcher.state();
        let result = TextBatcher::batch_at(state, data, Split::Train, &mut x, &mut y)
            .and_then(|()| self.step_on(&x, &y));
        (self.inputs, self.targets) = (x, y);
        if result.is_ok() {
            self.batcher.skip_to(state.step + 1);
        }
        result
    }

    /// One training step on a given batch: `tokens` and `targets` (B, T) row-major.
    pub fn step_on(&mut self, tokens: &[u32], targets: &[u32]) -> Result<()> {
        self.train.set_batch(tokens, targets)?;
        let lr = self.config.lr * self.config.schedule.factor(self.step);
        if lr.to_bits() != self.optim.lr().to_bits() {
            self.optim.set_lr(lr)?;
        }
        let mut enc = self.gpu.encoder("halfgrad gpt train step");
        self.optim.clear_flag(&mut enc);
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("halfgrad gpt train step"),
                timestamp_writes: None,
            });
            self.train.encode_forward_backward(&mut pass);
            self.optim.encode_step(&mut pass);
        }
        enc.copy_buffer_to_buffer(
            self.train.loss().buffer(),
            0,
            &self.stats,
            (stats_word::LOSS * 4) as u64,
            4,
        );
        self.gpu.submit(enc.finish())?;
        self.step += 1;
        Ok(())
    }

    /// Reads the statistics (one readback; call it every few steps).
    pub async fn stats(&self) -> Result<TrainStats> {
        let mut enc = self.gpu.encoder("halfgrad gpt trainer stats");
        enc.copy_buffer_to_buffer(
            self.scaler.state_buffer(),
            0,
            &self.stats,
            0,
            (word::USED * 4) as u64,
        );
        self.gpu.submit(enc.finish())?;
        let bytes = self
            .gpu
            .read_buffer(&self.stats, (stats_word::ALLOCATED * 4) as u64)
            .await?;
        let w: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(TrainStats {
            step: self.step,
            loss: f32::from_bits(w[stats_word::LOSS]),
            loss_scale: f32::from_bits(w[word::SCALE]),
            skipped_steps: w[word::SKIPPED],
            nonfinite_steps: w[word::NONFINITE],
            optimizer_steps: w[word::STEP],
            grad_norm: f32::from_bits(w[word::LAST_NORM]),
            last_step_skipped: w[word::LAST_SKIPPED] != 0,
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn stats_blocking(&self) -> Result<TrainStats> {
        pollster::block_on(self.stats())
    }

    /// The evaluation windows of a split this run scores: every one, or
    /// `config.eval_windows` of them evenly spaced (window `j * W / K`).
    pub fn eval_window_indices(&self, data: &TextData, split: Split) -> Vec<usize> {
        let w = data.eval_window_count(split);
        let k = self.config.eval_windows;
        if k == 0 || w <= k {
            (0..w).collect()
        } else {
            (0..k).map(|j| j * w / k).collect()
        }
    }

    /// Mean validation loss over [`GptTrainer::eval_window_indices`] of `split`.
    pub async fn evaluate(&self, data: &TextData, split: Split) -> Result<GptEvaluation> {
        self.check_data(data)?;
        let windows = self.eval_window_indices(data, split);
        self.evaluate_windows(data, split, &windows).await
    }

    /// Mean loss over the given evaluation windows of `split`, `batch` windows per
    /// forward pass (the last pass padded with repeats that are not counted).
    pub async fn evaluate_windows(
        &self,
        data: &TextData,
        split: Split,
        windows: &[usize],
    ) -> Result<GptEvaluation> {
        let (b, t) = (self.config.batch, self.config.model.block);
        let (mut inputs, mut targets) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
        let (mut xi, mut yi) = (Vec::new(), Vec::new());
        let mut total = 0.0f64;
        for chunk in windows.chunks(b) {
            inputs.clear();
            targets.clear();
            for k in 0..b {
                let i = chunk[k.min(chunk.len() - 1)];
                data.eval_windows(split, i..i + 1, &mut xi, &mut yi)?;
                inputs.extend_from_slice(&xi);
                targets.extend_from_slice(&yi);
            }
            self.eval.set_batch(&inputs, &targets)?;
            self.eval.forward()?;
            let losses = self.eval.loss_layer().losses().read_f32().await?;
            total += losses[..chunk.len() * t]
                .iter()
                .map(|&l| l as f64)
                .sum::<f64>();
        }
        let tokens = windows.len() * t;
        Ok(GptEvaluation {
            loss: total / tokens.max(1) as f64,
            windows: windows.len(),
            tokens,
        })
    }

    /// Mean loss of a whole text as `halfgrad gpt eval` defines it: every non-overlapping
    /// window (inputs `bytes[i*T .. i*T+T]`, targets one later, for every `i` with
    /// `i*T + T + 1 <= len`). A text shorter than `block + 1` bytes, or with a byte
    /// outside the vocabulary, is an error.
    pub async fn evaluate_text(&self, name: &str, bytes: &[u8]) -> Result<GptEvaluation> {
        let (b, t, v) = (
            self.config.batch,
            self.config.model.block,
            self.config.model.vocab,
        );
        if bytes.len() < t + 1 {
            return Err(Error::InvalidArgument(format!(
                "{name}: {} bytes is shorter than the model's block + 1 = {} bytes",
                bytes.len(),
                t + 1
            )));
        }
        if let Some(i) = bytes.iter().position(|&x| x as usize >= v) {
            return Err(Error::LabelOutOfRange {
                index: i,
                label: bytes[i] as u32,
                classes: v,
            });
        }
        let windows = (bytes.len() - 1) / t;
        let (mut inputs, mut targets) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
        let mut total = 0.0f64;
        let all: Vec<usize> = (0..windows).collect();
        for chunk in all.chunks(b) {
            inputs.clear();
            targets.clear();
            for k in 0..b {
                let i = chunk[k.min(chunk.len() - 1)];
                inputs.extend(bytes[i * t..i * t + t].iter().map(|&x| x as u32));
                targets.extend(bytes[i * t + 1..i * t + t + 1].iter().map(|&x| x as u32));
            }
            self.eval.set_batch(&inputs, &targets)?;
            self.eval.forward()?;
            let losses = self.eval.loss_layer().losses().read_f32().await?;
            total += losses[..chunk.len() * t]
                .iter()
                .map(|&l| l as f64)
                .sum::<f64>();
        }
        Ok(GptEvaluation {
            loss: total / (windows * t) as f64,
            windows,
            tokens: windows * t,
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn evaluate_text_blocking(&self, name: &str, bytes: &[u8]) -> Result<GptEvaluation> {
        pollster::block_on(self.evaluate_text(name, bytes))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn evaluate_blocking(&self, data: &TextData, split: Split) -> Result<GptEvaluation> {
        pollster::block_on(self.evaluate(data, split))
    }

    /// Generates `tokens` bytes after `prompt` on the GPU (a batch-1 graph over the same
    /// parameters, built on first use): per token one forward pass over the last
    /// `block` bytes and one readback of the logits; the next byte is drawn on the host
    /// ([`SampleConfig::pick`]) from a SplitMix64 seeded by `seed`. The same seed gives
    /// the same bytes.
    pub async fn sample(
        &mut self,
        prompt: &[u8],
        tokens: usize,
        how: &SampleConfig,
        seed: u64,
    ) -> Result<Vec<u8>> {
        how.validate()?;
        let (v, t) = (self.config.model.vocab, self.config.model.block);
        if let Some(i) = prompt.iter().position(|&b| b as usize >= v) {
            return Err(Error::LabelOutOfRange {
                index: i,
                label: prompt[i] as u32,
                classes: v,
            });
        }
        if self.sampler.is_none() {
            let ctx = LayerCtx::new(&self.gpu, self.policy, self.scaler.flag());
            self.sampler = Some(GptGraph::new(
                &ctx,
                &self.config.model,
                &self.store,
                (1, t),
                &self.unit_scale,
                false,
            )?);
        }
        let graph = self
            .sampler
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("no sampler".into()))?;
        let mut rng = SplitMix64::new(seed);
        let mut text: Vec<u32> = if prompt.is_empty() {
            vec![b'\n' as u32]
        } else {
            prompt.iter().map(|&b| b as u32).collect()
        };
        let start = text.len();
        let mut window = vec![0u32; t];
        for _ in 0..tokens {
            let ctx_start = text.len().saturating_sub(t);
            let context = &text[ctx_start..];
            window[..context.len()].copy_from_slice(context);
            window[context.len()..].iter_mut().for_each(|x| *x = 0);
            graph.set_tokens(&window)?;
            graph.forward()?;
            // Causal: position context.len() - 1 sees only the context.
            let logits = graph.logits().read_f32().await?;
            let row = context.len() - 1;
            let next = how.pick(&logits[row * v..(row + 1) * v], &mut rng)?;
            text.push(next);
        }
        Ok(text[start..].iter().map(|&b| b as u8).collect())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn sample_blocking(
        &mut self,
        prompt: &[u8],
        tokens: usize,
        how: &SampleConfig,
        seed: u64,
    ) -> Result<Vec<u8>> {
        pollster::block_on(self.sample(prompt, tokens, how, seed))
    }

    /// The current weights read back (host copy in state-dict order).
    pub async fn weights(&self) -> Result<GptWeights> {
        let mut values = Vec::with_capacity(self.store.len());
        for p in self.store.params() {
            values.push(p.master.read_f32().await?);
        }
        GptWeights::from_values(&self.config.model, values)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn weights_blocking(&self) -> Result<GptWeights> {
        pollster::block_on(self.weights())
    }

    /// The whole state as a checkpoint: weights (GPT-2 names), AdamW and scaler state,
    /// the settings, the step, the batcher position and which data it was trained on.
    pub async fn checkpoint(&self, data: &TextData) -> Result<Checkpoint> {
        let mut ck = Checkpoint::new();
        self.weights().await?.write_to(&mut ck)?;
        for t in self.optim.state().await? {
            ck.push(NamedTensor::from_state(&t)?)?;
        }
        ck.set_meta(key::FORMAT, GPT_CHECKPOINT_FORMAT);
        self.config.write_meta(&mut ck);
        ck.set_meta(key::STEP, self.step);
        let batcher = serde_json::to_string(&self.batcher.state())
            .map_err(|e| Error::InvalidArgument(format!("batcher state: {e}")))?;
        ck.set_meta(key::BATCHER, batcher);
        ck.set_meta(key::DATA, data.name());
        ck.set_meta(key::DATA_LEN, data.len());
        ck.set_meta(key::VERSION, env!("CARGO_PKG_VERSION"));
        Ok(ck)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, path: &std::path::Path, data: &TextData) -> Result<()> {
        pollster::block_on(self.checkpoint(data))?.save(path)
    }

    /// The settings a GPT checkpoint holds (to build evaluation or sampling without the
    /// optimizer, or to compare with a resumed run's options).
    pub fn config_of(ck: &Checkpoint) -> Result<GptTrainConfig> {
        let format = ck.meta(key::FORMAT)?;
        if format != GPT_CHECKPOINT_FORMAT {
            return Err(Error::Checkpoint {
                path: ck.origin().to_string(),
                message: format!("format {format:?} is not a halfgrad GPT checkpoint ({GPT_CHECKPOINT_FORMAT:?})"),
            });
        }
        GptTrainConfig::read_meta(ck)
    }

    /// The number of bytes of the text the checkpoint was trained on.
    pub fn data_len_of(ck: &Checkpoint) -> Result<usize> {
        ck.meta_parse(key::DATA_LEN)
    }

    /// Continues the run `ck` holds, bit for bit: every tensor and setting is checked
    /// before anything is written (an [`Error::Checkpoint`] naming the file).
    pub async fn from_checkpoint(gpu: &Gpu, ck: &Checkpoint) -> Result<GptTrainer> {
        let origin = ck.origin().to_string();
        let bad = |message: String| Error::Checkpoint {
            path: origin.clone(),
            message,
        };
        let config = GptTrainer::config_of(ck)?;
        let batcher: TextBatcherState = serde_json::from_str(ck.meta(key::BATCHER)?)
            .map_err(|e| bad(format!("metadata `{}`: {e}", key::BATCHER)))?;
        if batcher.batch != config.batch || batcher.seed != config.seed {
            return Err(bad(format!(
                "batcher state {batcher:?} disagrees with batch {} / seed {}",
                config.batch, config.seed
            )));
        }
        let step: u64 = ck.meta_parse(key::STEP)?;
        let weights = GptWeights::from_checkpoint(ck, &config.model)?;
        let mut trainer = GptTrainer::new(gpu, config, Some(&weights))
            .map_err(|e| bad(format!("cannot rebuild the trainer: {e}")))?;
        let fresh = trainer.optim.state().await?;
        let mut names: Vec<&str> = weights.specs().iter().map(|s| s.name.as_str()).collect();
        names.extend(fresh.iter().map(|t| t.name.as_str()));
        ck.expect_names(&names)?;
        let mut state: Vec<StateTensor> = Vec::with_capacity(fresh.len());
        for want in &fresh {
            let t = ck.tensor(&want.name)?;
            let kind = match want.data {
                StateData::F32(_) => TensorDType::F32,
                StateData::U32(_) => TensorDType::U32,
            };
            if t.shape != want.shape || t.dtype != kind {
                return Err(bad(format!(
                    "tensor `{}` is {} {:?}, expected {} {:?}",
                    t.name, t.dtype, t.shape, kind, want.shape
                )));
            }
            state.push(t.to_state().map_err(|e| bad(e.to_string()))?);
        }
        trainer
            .optim
            .load_state(&state)
            .map_err(|e| bad(format!("optimizer state: {e}")))?;
        trainer.batcher = TextBatcher::from_state(batcher).map_err(|e| bad(e.to_string()))?;
        trainer.step = step;
        Ok(trainer)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(gpu: &Gpu, path: &std::path::Path) -> Result<GptTrainer> {
        let ck = Checkpoint::load(path)?;
        pollster::block_on(GptTrainer::from_checkpoint(gpu, &ck))
    }

    /// The precision path of the matrix products on this device.
    pub fn describe_path(&self) -> &'static str {
        if self.config.precision == Precision::F16 && self.train.graph().uses_kernel("matmul/coop")
        {
            "f16 cooperative matrix"
        } else {
            describe_path(&self.gpu, self.config.precision)
        }
    }

    pub fn config(&self) -> &GptTrainConfig {
        &self.config
    }
    pub fn policy(&self) -> Policy {
        self.policy
    }
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    pub fn steps(&self) -> u64 {
        self.step
    }
    pub fn params(&self) -> &ParamStore {
        &self.store
    }
    pub fn num_params(&self) -> usize {
        self.store.num_scalars()
    }
    pub fn train_graph(&self) -> &GptGraph {
        &self.train
    }
    pub fn optimizer(&self) -> &AdamW {
        &self.optim
    }
    pub fn batcher_state(&self) -> TextBatcherState {
        self.batcher.state()
    }
    /// Tokens per step (B x T).
    pub fn tokens_per_step(&self) -> usize {
        self.config.batch * self.config.model.block
    }
}

impl GptTrainer {
    /// Bytes held by the training graph and the parameters, by role (the evaluation
    /// and sampling graphs are not counted). Attention keeps P (B, H, T, T) per layer in
    /// the activation dtype; the f32 score buffer and dS are scratch shared by the
    /// layers (counted once).
    pub fn memory(&self) -> super::MemoryReport {
        let bytes = |t: &crate::Tensor| t.byte_len();
        let params = self.store.params();
        let (b, t) = (self.config.batch, self.config.model.block);
        let h = self.config.model.n_head;
        let square = b * h * t * t;
        let s = self.config.precision.compute_dtype().size_bytes();
        let graph = self.train.graph();
        let mut activations: usize = graph.tensors().map(|(v, _)| bytes(v)).sum();
        let mut activation_grads: usize = graph.tensors().filter_map(|(_, g)| g.map(bytes)).sum();
        activation_grads += graph.scratch().iter().map(bytes).sum::<usize>();
        activations += self.config.model.n_layer * square * s + square * 4;
        activation_grads += square * s;
        super::MemoryReport {
            precision: self.config.precision,
            params: self.num_params(),
            batch: b,
            master_weights: params.iter().map(|p| bytes(&p.master)).sum(),
            low_copies: params
                .iter()
                .filter_map(|p| p.low.as_ref())
                .map(bytes)
                .sum(),
            moments: params
                .iter()
                .filter_map(|p| self.optim.moments(&p.name))
                .map(|(m, v)| bytes(m) + bytes(v))
                .sum(),
            grads: params.iter().map(|p| bytes(&p.grad)).sum(),
            activations,
            activation_grads,
        }
    }
}
