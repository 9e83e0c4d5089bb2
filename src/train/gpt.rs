//! [`GptTrainer`]: the generic [`Trainer`] over a [`GptModel`], fed with token batches
//! from a [`TextData`], plus what a language model needs beside it: the mean validation
//! loss over fixed windows, GPU sampling, whole-text evaluation, checkpoints that also
//! record the data and exact resume.
//!
//! One training step is the Trainer's: one command buffer and one submission with no
//! readback (the batch's tokens, targets and the embedding's token index go in with
//! queued writes; one compute pass records forward, loss, backward, AdamW and the scaler
//! update). Batch `k` is a pure function of `(seed, k)` ([`TextBatcher::batch_at`]), so
//! the step count the checkpoint holds is the data position. Three graphs share the
//! parameters: training (B x T, the Trainer's), evaluation (forward only, B x T) and
//! sampling (forward only, 1 x T, built on first use).

use super::schedule::LrSchedule;
use super::trainer::{TrainStats, Trainer};
use super::TrainConfig;
use crate::amp::{constant_scale, Policy, Precision, ScalerConfig};
use crate::checkpoint::Checkpoint;
use crate::data::text::{Split, TextBatcher, TextBatcherState, TextData};
use crate::data::SplitMix64;
use crate::nn::gpt::{
    plan_borrowing_graph, GptConfig, GptGraph, GptModel, GptWeights, SampleConfig,
};
use crate::nn::{check_plan, Batch, DeviceBudget, Inputs, LayerCtx, Model, ParamStore, SizePlan};
use crate::optim::{AdamConfig, AdamW};
use crate::{Error, Gpu, Result};

/// Metadata keys a GPT checkpoint adds to the Trainer's.
mod key {
    pub const EVAL_WINDOWS: &str = "gpt.eval_windows";
    pub const DATA: &str = "data.name";
    pub const DATA_LEN: &str = "data.bytes";
    pub const MODEL_KIND: &str = "model.kind";
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
    /// Loss scaling; `None`: the precision's default ([`TrainConfig::default_scaler`]).
    pub scaler: Option<ScalerConfig>,
}

impl GptTrainConfig {
    /// The default run on the tiny preset: f16, batch 16, AdamW lr 6e-3 with betas
    /// (0.9, 0.99), no weight decay, clipping at 1, warmup min(100, steps / 10) then a
    /// cosine to 0 at `steps`, seed 0, 64 evaluation windows.
    pub fn tiny(steps: u64) -> GptTrainConfig {
        GptTrainConfig {
            model: GptConfig::tiny(),
            precision: Precision::F16,
            batch: 16,
            lr: 6e-3,
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

    /// The Trainer's settings (no input noise; the model is `model`, given apart).
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            precision: self.precision,
            batch: self.batch,
            lr: self.lr,
            schedule: self.schedule,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            input_noise: 0.0,
            seed: self.seed,
            scaler: self.scaler.clone(),
        }
    }

    /// The GPT settings of a Trainer's settings and a model.
    pub fn from_train_config(c: &TrainConfig, model: GptConfig, eval_windows: usize) -> Self {
        GptTrainConfig {
            model,
            precision: c.precision,
            batch: c.batch,
            lr: c.lr,
            schedule: c.schedule,
            betas: c.betas,
            eps: c.eps,
            weight_decay: c.weight_decay,
            max_grad_norm: c.max_grad_norm,
            seed: c.seed,
            eval_windows,
            scaler: c.scaler.clone(),
        }
    }

    pub fn scaler_config(&self) -> ScalerConfig {
        self.train_config().scaler_config()
    }

    pub fn adam_config(&self) -> AdamConfig {
        self.train_config().adam_config()
    }

    pub fn policy(&self) -> Policy {
        self.train_config().policy()
    }

    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.train_config().validate()
    }
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
    trainer: Trainer<GptModel>,
    eval_windows: usize,
    eval: GptGraph,
    sampler: Option<GptGraph>,
    /// A scale of 1 for the forward-only graphs (their backward never runs).
    unit_scale: wgpu::Buffer,
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

impl std::fmt::Debug for GptTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GptTrainer")
            .field("trainer", &self.trainer)
            .finish()
    }
}

impl GptTrainer {
    /// Every buffer [`GptTrainer::new`] allocates, computed from `config` without a GPU:
    /// the Trainer's ([`Trainer::plan`]: parameters, Adam moments, the training graph,
    /// state) and the forward-only evaluation graph (group `eval`: its tokens, labels,
    /// log-sum-exp and LayerNorm row terms; its activations are the training graph's,
    /// [`GptGraph::borrowing`]).
    /// The sampling graph (1 x T, forward only, built on first use) is not included.
    pub fn plan(config: &GptTrainConfig) -> Result<SizePlan> {
        config.validate()?;
        let mut plan = Trainer::<GptModel>::plan(&config.train_config(), &config.model)?
            .ok_or_else(|| Error::InvalidArgument("the GPT model does not plan".into()))?;
        let mut eval = SizePlan::new(plan.policy, config.batch);
        plan_borrowing_graph(&mut eval, &config.model, (config.batch, config.model.block))?;
        plan.tensors.extend(eval.tensors.into_iter().map(|mut t| {
            t.group = "eval".into();
            t.name = format!("eval {}", t.name);
            t
        }));
        Ok(plan)
    }

    /// Refuses `config` before anything is allocated when [`GptTrainer::plan`] does not
    /// fit the device ([`crate::nn::check_plan`]): [`Error::DoesNotFit`] names the
    /// buffer, its size, the limit and the largest batch that fits, or, when no batch
    /// does (the attention scores of one sequence, a position embedding), the largest
    /// block size.
    pub fn check_fits(gpu: &Gpu, config: &GptTrainConfig) -> Result<()> {
        let budget = DeviceBudget::of(gpu.caps(), gpu.adapter().device_type == "Cpu");
        let by_batch = check_plan(&budget, "batch", config.batch, |batch| {
            GptTrainer::plan(&GptTrainConfig {
                batch,
                ..config.clone()
            })
        });
        match by_batch {
            Err(Error::DoesNotFit { largest: None, .. }) => {
                let by_block = check_plan(&budget, "block size", config.model.block, |block| {
                    GptTrainer::plan(&GptTrainConfig {
                        model: GptConfig {
                            block,
                            ..config.model
                        },
                        ..config.clone()
                    })
                });
                match by_block {
                    Err(
                        e @ Error::DoesNotFit {
                            largest: Some(_), ..
                        },
                    ) => Err(e),
                    _ => by_batch,
                }
            }
            other => other,
        }
    }

    /// A fresh run: GPT-2's initialisation from `config.seed`, or `init` (e.g. a Hugging
    /// Face GPT-2 read by [`crate::nn::gpt::hf::load`]; its config must be `config.model`).
    pub fn new(gpu: &Gpu, config: GptTrainConfig, init: Option<&GptWeights>) -> Result<GptTrainer> {
        config.validate()?;
        if let Some(w) = init {
            if w.config() != &config.model {
                return Err(Error::InvalidArgument(format!(
                    "initial weights of model {} do not fit the run's model {}",
                    w.config(),
                    config.model
                )));
            }
        }
        // The whole plan (training and evaluation graphs) before any buffer.
        GptTrainer::check_fits(gpu, &config)?;
        // The Trainer's row batcher is unused (text batches come from the step count);
        // it is given the smallest valid length.
        let trainer = Trainer::<GptModel>::with_model(
            gpu,
            config.train_config(),
            &config.model,
            config.batch,
        )?;
        if let Some(w) = init {
            for (p, v) in trainer.model().params().params().iter().zip(w.values()) {
                p.write_f32(v)?;
            }
        }
        GptTrainer::around(trainer, config.eval_windows)
    }

    /// The evaluation graph beside a Trainer.
    fn around(trainer: Trainer<GptModel>, eval_windows: usize) -> Result<GptTrainer> {
        let gpu = trainer.gpu().clone();
        let model = trainer.model();
        let (b, t) = (model.layout().batch, model.config().block);
        let unit_scale = constant_scale(&gpu, 1.0)?;
        let ctx = LayerCtx::new(&gpu, trainer.policy(), trainer.scaler().flag());
        // Evaluation runs at the training batch, between steps: it borrows the training
        // graph's activations (the step's loss is copied out in its own submission).
        let eval = GptGraph::borrowing(&ctx, model.params(), &unit_scale, model.gpt_graph())?;
        Ok(GptTrainer {
            inputs: Vec::with_capacity(b * t),
            targets: Vec::with_capacity(b * t),
            trainer,
            eval_windows,
            eval,
            sampler: None,
            unit_scale,
        })
    }

    /// The run's settings.
    pub fn config(&self) -> GptTrainConfig {
        GptTrainConfig::from_train_config(
            self.trainer.config(),
            *self.model_config(),
            self.eval_windows,
        )
    }

    pub fn model_config(&self) -> &GptConfig {
        self.trainer.model().config()
    }

    fn check_data(&self, data: &TextData) -> Result<()> {
        let block = self.model_config().block;
        if data.block() != block {
            return Err(Error::InvalidArgument(format!(
                "{}: windows of {} tokens, the model's block is {block}",
                data.name(),
                data.block(),
            )));
        }
        Ok(())
    }

    /// The text batcher at the current step.
    fn batcher(&self) -> TextBatcherState {
        let c = self.trainer.config();
        TextBatcherState {
            seed: c.seed,
            step: self.trainer.steps(),
            batch: c.batch,
        }
    }

    /// One training step on batch `steps()` of `data`'s training split (the Trainer's
    /// step: queued writes, one command buffer, one submission, no readback). `data`
    /// must keep the same bytes for the whole run (a resumed run is checked against the
    /// checkpoint's length).
    pub fn step(&mut self, data: &TextData) -> Result<()> {
        self.check_data(data)?;
        let (mut x, mut y) = (
            std::mem::take(&mut self.inputs),
            std::mem::take(&mut self.targets),
        );
        let result = TextBatcher::batch_at(self.batcher(), data, Split::Train, &mut x, &mut y)
            .and_then(|()| self.step_on(&x, &y));
        (self.inputs, self.targets) = (x, y);
        result
    }

    /// One training step on a given batch: `tokens` and `targets` (B, T) row-major.
    pub fn step_on(&mut self, tokens: &[u32], targets: &[u32]) -> Result<()> {
        self.trainer.step_batch(&Batch {
            inputs: Inputs::Tokens(tokens),
            targets,
        })
    }

    /// Reads the statistics (one readback; call it every few steps).
    pub async fn stats(&self) -> Result<TrainStats> {
        self.trainer.stats().await
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn stats_blocking(&self) -> Result<TrainStats> {
        pollster::block_on(self.stats())
    }

    /// The statistics and the parameters whose gradients were non-finite, with their
    /// step counts, in one readback ([`Trainer::stats_and_overflows`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn stats_and_overflows_blocking(&self) -> Result<(TrainStats, Vec<(String, u32)>)> {
        self.trainer.stats_and_overflows_blocking()
    }
    /// The evaluation windows of a split this run scores: every one, or
    /// `config.eval_windows` of them evenly spaced (window `j * W / K`).
    pub fn eval_window_indices(&self, data: &TextData, split: Split) -> Vec<usize> {
        let w = data.eval_window_count(split);
        let k = self.eval_windows;
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
        let (b, t) = (self.trainer.config().batch, self.model_config().block);
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
        let m = *self.model_config();
        let (b, t, v) = (self.trainer.config().batch, m.block, m.vocab);
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
        let (v, t) = (self.model_config().vocab, self.model_config().block);
        if let Some(i) = prompt.iter().position(|&b| b as usize >= v) {
            return Err(Error::LabelOutOfRange {
                index: i,
                label: prompt[i] as u32,
                classes: v,
            });
        }
        if self.sampler.is_none() {
            let gpu = self.trainer.gpu();
            let ctx = LayerCtx::new(gpu, self.trainer.policy(), self.trainer.scaler().flag());
            let model = self.trainer.model();
            self.sampler = Some(GptGraph::new(
                &ctx,
                model.config(),
                model.params(),
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
        let params = self.trainer.model().params();
        let mut values = Vec::with_capacity(params.len());
        for p in params.params() {
            values.push(p.master.read_f32().await?);
        }
        GptWeights::from_values(self.model_config(), values)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn weights_blocking(&self) -> Result<GptWeights> {
        pollster::block_on(self.weights())
    }

    /// The whole state as the Trainer's checkpoint (weights under GPT-2 names, AdamW and
    /// scaler state, the settings, the step, `model.kind = gpt`) plus the evaluation
    /// window count and the data it was trained on (name and length).
    pub async fn checkpoint(&self, data: &TextData) -> Result<Checkpoint> {
        let mut ck = self.trainer.checkpoint().await?;
        ck.set_meta(key::EVAL_WINDOWS, self.eval_windows);
        ck.set_meta(key::DATA, data.name());
        ck.set_meta(key::DATA_LEN, data.len());
        Ok(ck)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, path: &std::path::Path, data: &TextData) -> Result<()> {
        pollster::block_on(self.checkpoint(data))?.save(path)
    }

    /// The settings a GPT checkpoint holds (to compare with a resumed run's options, or
    /// to export without a GPU). A checkpoint of another model kind is an
    /// [`Error::Checkpoint`].
    pub fn config_of(ck: &Checkpoint) -> Result<GptTrainConfig> {
        let kind = ck.meta(key::MODEL_KIND).unwrap_or("mlp");
        if kind != <GptModel as Model>::KIND {
            return Err(Error::Checkpoint {
                path: ck.origin().to_string(),
                message: format!("it holds a `{kind}` model, not a GPT"),
            });
        }
        let (config, model) = TrainConfig::read_meta(ck)?;
        let model: GptConfig = model.parse().map_err(|e: Error| Error::Checkpoint {
            path: ck.origin().to_string(),
            message: e.to_string(),
        })?;
        Ok(GptTrainConfig::from_train_config(
            &config,
            model,
            ck.meta_parse(key::EVAL_WINDOWS)?,
        ))
    }

    /// The number of bytes of the text the checkpoint was trained on.
    pub fn data_len_of(ck: &Checkpoint) -> Result<usize> {
        ck.meta_parse(key::DATA_LEN)
    }

    /// Continues the run `ck` holds, bit for bit ([`Trainer::restore`]: every tensor and
    /// setting is checked before anything is written).
    pub async fn from_checkpoint(gpu: &Gpu, ck: &Checkpoint) -> Result<GptTrainer> {
        let config = GptTrainer::config_of(ck)?;
        let trainer = Trainer::<GptModel>::restore(gpu, ck).await?;
        GptTrainer::around(trainer, config.eval_windows)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(gpu: &Gpu, path: &std::path::Path) -> Result<GptTrainer> {
        let ck = Checkpoint::load(path)?;
        pollster::block_on(GptTrainer::from_checkpoint(gpu, &ck))
    }

    /// The precision path of the matrix products on this device.
    pub fn describe_path(&self) -> &'static str {
        self.trainer.describe_path()
    }

    /// The generic trainer underneath.
    pub fn trainer(&self) -> &Trainer<GptModel> {
        &self.trainer
    }
    pub fn policy(&self) -> Policy {
        self.trainer.policy()
    }
    pub fn gpu(&self) -> &Gpu {
        self.trainer.gpu()
    }
    pub fn steps(&self) -> u64 {
        self.trainer.steps()
    }
    /// [`Trainer::set_schedule`]: another learning-rate schedule from the next step on
    /// (saved with the checkpoint).
    pub fn set_schedule(&mut self, schedule: LrSchedule) -> Result<()> {
        self.trainer.set_schedule(schedule)
    }
    pub fn params(&self) -> &ParamStore {
        self.trainer.model().params()
    }
    pub fn num_params(&self) -> usize {
        self.params().num_scalars()
    }
    pub fn train_graph(&self) -> &GptGraph {
        self.trainer.model().gpt_graph()
    }
    pub fn optimizer(&self) -> &AdamW {
        self.trainer.optimizer()
    }
    /// Tokens per step (B x T).
    pub fn tokens_per_step(&self) -> usize {
        self.trainer.config().batch * self.model_config().block
    }
}

impl GptTrainer {
    /// Bytes held by the training graph and the parameters, by role (the evaluation
    /// and sampling graphs are not counted). Attention keeps P (B, H, T, T) per layer in
    /// the activation dtype; the f32 score buffer and dS are scratch shared by the
    /// layers (counted once).
    pub fn memory(&self) -> super::MemoryReport {
        let bytes = |t: &crate::Tensor| t.byte_len();
        let params = self.params().params();
        let c = self.trainer.config();
        let m = *self.model_config();
        let (b, t, h) = (c.batch, m.block, m.n_head);
        let square = b * h * t * t;
        let s = c.precision.compute_dtype().size_bytes();
        let graph = self.train_graph().graph();
        let mut activations: usize = graph.tensors().map(|(v, _)| bytes(v)).sum();
        let mut activation_grads: usize = graph.grad_buffers().into_iter().map(bytes).sum();
        activation_grads += graph.scratch().iter().map(bytes).sum::<usize>();
        activations += m.n_layer * square * s + square * 4;
        activation_grads += square * s;
        super::MemoryReport {
            precision: c.precision,
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
                .filter_map(|p| self.optimizer().moments(&p.name))
                .map(|(m, v)| bytes(m) + bytes(v))
                .sum(),
            grads: params.iter().map(|p| bytes(&p.grad)).sum(),
            activations,
            activation_grads,
        }
    }
}
