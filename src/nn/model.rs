//! [`Model`]: what the [`Trainer`](crate::train::Trainer) needs of a model, whatever its
//! architecture. A model owns its parameters (a [`ParamStore`]) and builds its training
//! [`Graph`] over them for a fixed batch; the trainer adds the optimizer, the loss scaler,
//! the schedule, statistics, evaluation and checkpoints. [`Mlp`](super::Mlp) is one.

use super::graph::{Graph, ParamStore};
use super::LayerCtx;
use crate::{Error, Result, Tensor};

/// A batch's inputs: f32 feature rows, or u32 token ids.
#[derive(Debug, Clone, Copy)]
pub enum Inputs<'a> {
    // rows: (B, features) row-major
    Rows(&'a [f32]),
    // tokens: (B, T) row-major
    Tokens(&'a [u32]),
}

/// One batch: inputs and u32 targets (a class per row, or one per position).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub inputs: Inputs<'a>,
    // targets: (B, targets_per_row), each < classes
    pub targets: &'a [u32],
}

/// The shape of a model's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLayout {
    /// Rows per batch (B).
    pub batch: usize,
    /// Inputs per row: features, or tokens per sequence.
    pub inputs_per_row: usize,
    /// Whether inputs are token ids ([`Inputs::Tokens`]) rather than f32 rows.
    pub tokens: bool,
    /// Targets per row (1 for a classifier, T for a next-token model).
    pub targets_per_row: usize,
    /// Targets must be below this (classes, vocabulary size).
    pub classes: usize,
}

/// A trainable model: parameters, a training graph for a fixed batch, its inputs and its
/// loss. One step is `set_batch` then the graph's forward and backward.
pub trait Model: Sized + std::fmt::Debug {
    /// The architecture, one line in checkpoint metadata (`Display` / `FromStr`).
    type Config: Clone
        + PartialEq
        + std::fmt::Debug
        + std::fmt::Display
        + std::str::FromStr<Err = Error>;

    /// The `model.kind` entry of checkpoint metadata (`"mlp"`, ...).
    const KIND: &'static str;

    /// Parameters initialised from `seed`, and the training graph for `batch` rows.
    /// `ctx` carries the found-inf flag and the parameter-gradient mode; `scale` is the
    /// f32 buffer whose element 0 seeds backward (the loss scaler's scale).
    fn build(
        ctx: &LayerCtx<'_>,
        config: &Self::Config,
        batch: usize,
        seed: u64,
        scale: &wgpu::Buffer,
    ) -> Result<Self>;

    fn config(&self) -> &Self::Config;

    /// The parameters, in state-dict order (checkpoint names).
    fn params(&self) -> &ParamStore;

    /// The training graph (forward, loss, backward).
    fn graph(&self) -> &Graph;

    fn layout(&self) -> BatchLayout;

    /// Writes a batch into the graph's input and target buffers (queued; ordered before
    /// the next submission). Lengths and target ranges are checked on the host first.
    fn set_batch(&self, batch: &Batch<'_>) -> Result<()>;

    /// The buffer a batch's inputs go into, and the bytes [`Model::encode_inputs`] gives.
    fn input_buffer(&self) -> &wgpu::Buffer;

    /// The bytes of one batch's inputs as `input_buffer` holds them (evaluation uploads
    /// many batches at once and copies them in on the GPU).
    fn encode_inputs(&self, inputs: Inputs<'_>) -> Result<Vec<u8>>;

    /// The target buffer: (B * targets_per_row) u32.
    fn targets(&self) -> &wgpu::Buffer;

    /// The mean loss (1) f32, written by forward.
    fn loss(&self) -> &Tensor;

    /// Per-target losses (B * targets_per_row) f32, written by forward.
    fn losses(&self) -> &Tensor;

    /// A classifier's logits (B, classes), written by forward: evaluation then reports
    /// accuracy. `None` for other models.
    fn logits(&self) -> Option<&Tensor> {
        None
    }

    /// The equivalent PyTorch module, for checkpoint metadata.
    fn pytorch_module(&self) -> Option<String> {
        None
    }
}
