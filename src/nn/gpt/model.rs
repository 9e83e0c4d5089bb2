//! The GPT on the GPU: its parameters in a [`ParamStore`] (GPT-2 names) and graphs over
//! them ([`GptGraph`]): a training graph (forward, loss, backward) for batch B, and
//! forward-only graphs for evaluation and for sampling one sequence at a time, all
//! reading the same parameter tensors.
//!
//! Per block: LayerNorm -> c_attn -> causal attention -> c_proj -> residual add;
//! LayerNorm -> c_fc -> GELU (tanh) -> c_proj -> residual add. The residual stream and
//! its gradient are f32 (the embedding writes it, the residual adds sum into it); the
//! LayerNorm outputs, Linear outputs, attention probabilities and their gradients are in
//! the activation dtype. The LM head is a product with the tied token embedding's 16-bit
//! copy; its gradient and the embedding's add into the one f32 `dwte` (the graph sums
//! both uses). The loss is the mean softmax cross-entropy over the B x T positions.

use super::attention::{causal_attention, AttentionScratch};
use super::config::GptConfig;
use super::embedding::embedding;
use super::params::{block_prefix, GptWeights, WPE, WTE};
use super::residual::residual_add;
use crate::nn::graph::{Graph, GraphBuilder, ParamId, ParamStore, ValueId};
use crate::nn::{activation, layer_norm, linear, softmax_cross_entropy, Activation};
use crate::nn::{Batch, BatchLayout, Inputs, LayerCtx, Model, Param, XentLoss};
use crate::ops::embedding::{check_tokens, TokenIndex};
use crate::ops::layernorm::DEFAULT_EPS;
use crate::{DType, Error, Gpu, Result, Tensor};
use std::sync::Arc;

/// Checks that a GPT of `config` with `batch` sequences of `t` tokens fits the device's
/// buffer limits before anything is allocated: each parameter and the largest
/// activations (scores, logits, the MLP's hidden layer). A tensor past a limit is an
/// [`Error::TooLarge`] naming it and the limit.
pub fn check_fits(
    gpu: &Gpu,
    config: &GptConfig,
    batch: usize,
    t: usize,
    dtype: DType,
) -> Result<()> {
    config.validate()?;
    let rows = batch.checked_mul(t).ok_or_else(|| {
        Error::InvalidArgument(format!("{batch} sequences of {t} tokens overflow"))
    })?;
    let (v, c, h) = (config.vocab, config.n_embd, config.n_head);
    let checks: [(&'static str, Vec<usize>, DType); 6] = [
        (
            "GPT token embedding transformer.wte.weight (vocab, n_embd) f32",
            vec![v, c],
            DType::F32,
        ),
        (
            "GPT MLP weight mlp.c_fc.weight (4 n_embd, n_embd) f32",
            vec![4 * c, c],
            DType::F32,
        ),
        ("GPT logits (batch x block, vocab)", vec![rows, v], dtype),
        (
            "GPT attention scores (batch, heads, block, block) f32",
            vec![batch, h, t, t],
            DType::F32,
        ),
        (
            "GPT MLP hidden layer (batch x block, 4 n_embd)",
            vec![rows, 4 * c],
            dtype,
        ),
        (
            "GPT qkv (batch x block, 3 n_embd)",
            vec![rows, 3 * c],
            dtype,
        ),
    ];
    for (what, shape, d) in checks {
        match Tensor::check_size(gpu, &shape, d) {
            Err(Error::TooLarge {
                bytes,
                limit_name,
                limit,
                ..
            }) => {
                return Err(Error::TooLarge {
                    what,
                    bytes,
                    limit_name,
                    limit,
                })
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Uploads `weights` as the model's parameters, in state-dict order. Linear weights and
/// the token embedding (the LM head's weight) get a copy in the policy's matmul operand
/// dtype; the position embedding, biases and LayerNorm parameters are read in f32.
pub fn upload_params(ctx: &LayerCtx<'_>, weights: &GptWeights) -> Result<ParamStore> {
    let mut store = ParamStore::new();
    for (spec, values) in weights.iter() {
        let compute = if spec.is_matrix() && spec.name != WPE {
            ctx.policy.matmul_operand
        } else {
            DType::F32
        };
        store.add(Param::from_f32(
            ctx.gpu,
            &spec.name,
            &spec.shape,
            values,
            compute,
        )?)?;
    }
    Ok(store)
}

/// One graph of a GPT over a [`ParamStore`]: `batch` sequences of `t` tokens (t at most
/// the config's block), with backward (training) or without (evaluation, sampling).
#[derive(Debug)]
pub struct GptGraph {
    config: GptConfig,
    gpu: Gpu,
    batch: usize,
    t: usize,
    graph: Graph,
    // tokens: (B*T) u32, written by set_batch
    tokens: wgpu::Buffer,
    // index: the batch's token index for the embedding's backward (training graphs)
    index: Option<Arc<TokenIndex>>,
    logits: ValueId,
    loss: XentLoss,
    /// Host staging of the targets when only tokens are given.
    zeros: Vec<u32>,
}

impl GptGraph {
    /// Builds the graph and all its dispatches. `scale` is the f32 buffer whose element
    /// 0 seeds backward (the loss scaler's scale, or `constant_scale(gpu, 1.0)`).
    pub fn new(
        ctx: &LayerCtx<'_>,
        config: &GptConfig,
        store: &ParamStore,
        (batch, t): (usize, usize),
        scale: &wgpu::Buffer,
        backward: bool,
    ) -> Result<GptGraph> {
        let gpu = ctx.gpu;
        config.validate()?;
        if batch == 0 || t == 0 {
            return Err(Error::Empty {
                what: "GPT batch",
                shape: vec![batch, t],
            });
        }
        if t > config.block {
            return Err(Error::InvalidArgument(format!(
                "sequences of {t} tokens exceed the model's block size {} (its position \
                 embedding has {} rows)",
                config.block, config.block
            )));
        }
        check_fits(gpu, config, batch, t, ctx.policy.activation)?;
        let rows = batch * t;
        let param = |name: String| {
            store.find(&name).ok_or_else(|| {
                Error::InvalidArgument(format!("GPT {config}: no parameter `{name}`"))
            })
        };
        let pair = |prefix: String| -> Result<(ParamId, ParamId)> {
            Ok((
                param(format!("{prefix}.weight"))?,
                param(format!("{prefix}.bias"))?,
            ))
        };
        let tokens = gpu.scoped("allocating the GPT token buffer", || {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("halfgrad gpt tokens"),
                size: (rows as u64 * 4).div_ceil(16) * 16,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let index = match backward {
            true => Some(Arc::new(TokenIndex::new(gpu, config.vocab, rows)?)),
            false => None,
        };
        let scratch = AttentionScratch::new(
            gpu,
            (batch, config.n_head, t),
            ctx.policy.activation,
            backward,
        )?;
        let (wte, wpe) = (param(WTE.into())?, param(WPE.into())?);

        let mut g = GraphBuilder::new(ctx, store);
        // x: (B*T, C) f32, the residual stream
        let mut x = embedding(&mut g, &tokens, rows, t, wte, wpe, index.clone())?;
        for layer in 0..config.n_layer {
            let h = block_prefix(layer);
            let (g1, b1) = pair(format!("{h}.ln_1"))?;
            let a = layer_norm(&mut g, x, g1, b1, DEFAULT_EPS)?.y;
            let (w, b) = pair(format!("{h}.attn.c_attn"))?;
            let qkv = linear(&mut g, a, w, Some(b))?;
            let y = causal_attention(&mut g, qkv, (batch, t, config.n_head), &scratch)?;
            let (w, b) = pair(format!("{h}.attn.c_proj"))?;
            let proj = linear(&mut g, y, w, Some(b))?;
            x = residual_add(&mut g, x, proj)?;
            let (g2, b2) = pair(format!("{h}.ln_2"))?;
            let m = layer_norm(&mut g, x, g2, b2, DEFAULT_EPS)?.y;
            let (w, b) = pair(format!("{h}.mlp.c_fc"))?;
            let m = linear(&mut g, m, w, Some(b))?;
            let m = activation(&mut g, m, Activation::Gelu)?;
            let (w, b) = pair(format!("{h}.mlp.c_proj"))?;
            let m = linear(&mut g, m, w, Some(b))?;
            x = residual_add(&mut g, x, m)?;
        }
        let (gf, bf) = pair("transformer.ln_f".into())?;
        let xf = layer_norm(&mut g, x, gf, bf, DEFAULT_EPS)?.y;
        // The tied LM head: logits (B*T, V) = xf (B*T, C) @ wte^T (C, V).
        let logits = linear(&mut g, xf, wte, None)?;
        let loss = softmax_cross_entropy(&mut g, logits, scale)?;
        let graph = if backward {
            g.finish()?
        } else {
            g.finish_forward()
        };
        let zeros = vec![0u32; rows];
        // Valid labels from the start: a forward-only graph may never get targets.
        loss.set_labels(gpu, &zeros)?;
        Ok(GptGraph {
            config: *config,
            gpu: gpu.clone(),
            batch,
            t,
            graph,
            tokens,
            index,
            logits,
            loss,
            zeros,
        })
    }

    /// Uploads a batch (queued; ordered before the next submission): `tokens` and
    /// `targets` (B, T) row-major, every id below the vocabulary. Everything is checked
    /// first: a bad batch writes nothing ([`Error::DataLength`],
    /// [`Error::LabelOutOfRange`]).
    pub fn set_batch(&self, tokens: &[u32], targets: &[u32]) -> Result<()> {
        let rows = self.batch * self.t;
        for v in [tokens, targets] {
            if v.len() != rows {
                return Err(Error::DataLength {
                    shape: vec![self.batch, self.t],
                    expected: rows,
                    got: v.len(),
                });
            }
        }
        check_tokens(tokens, self.config.vocab)?;
        check_tokens(targets, self.config.vocab)?;
        if let Some(index) = &self.index {
            index.write(&self.gpu, tokens)?;
        }
        self.loss.set_labels(&self.gpu, targets)?;
        self.gpu.check()?;
        self.gpu
            .queue()
            .write_buffer(&self.tokens, 0, bytemuck::cast_slice(tokens));
        Ok(())
    }

    /// Uploads tokens only (sampling): the targets are zeros, the loss meaningless.
    pub fn set_tokens(&self, tokens: &[u32]) -> Result<()> {
        self.set_batch(tokens, &self.zeros)
    }

    /// Records forward and the loss.
    pub fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.graph.encode_forward(pass);
    }

    /// Records forward, the loss and backward (a training graph).
    pub fn encode_forward_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.graph.encode_forward_backward(pass);
    }

    /// Submits forward only: one command buffer.
    pub fn forward(&self) -> Result<()> {
        let mut enc = self.gpu.encoder("halfgrad gpt forward");
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("halfgrad gpt forward"),
                timestamp_writes: None,
            });
            self.encode_forward(&mut pass);
        }
        self.gpu.submit(enc.finish())?;
        Ok(())
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    pub fn config(&self) -> &GptConfig {
        &self.config
    }
    /// Sequences per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        self.t
    }
    /// The (B*T) u32 token buffer [`GptGraph::set_batch`] fills.
    pub fn tokens_buffer(&self) -> &wgpu::Buffer {
        &self.tokens
    }
    /// Logits (B*T, V) in the activation dtype, written by forward.
    pub fn logits(&self) -> &Tensor {
        self.graph.value(self.logits)
    }
    /// The loss op's tensors (per-position losses, mean loss).
    pub fn loss_layer(&self) -> &XentLoss {
        &self.loss
    }
    /// The mean loss (1) f32, written by forward.
    pub fn loss(&self) -> &Tensor {
        self.loss.loss()
    }
    /// Forward and backward dispatch counts.
    pub fn dispatch_counts(&self) -> (usize, usize) {
        self.graph.dispatch_counts()
    }
}

/// The GPT as a [`Model`] of the generic [`Trainer`](crate::train::Trainer): its
/// parameters and its training graph for a fixed batch of `block`-token sequences.
/// Batches are [`Inputs::Tokens`] `(B, T)` with `(B, T)` next-token targets.
#[derive(Debug)]
pub struct GptModel {
    params: ParamStore,
    graph: GptGraph,
}

impl GptModel {
    /// The training graph over `params` (from [`upload_params`]).
    pub fn from_params(
        ctx: &LayerCtx<'_>,
        config: &GptConfig,
        params: ParamStore,
        batch: usize,
        scale: &wgpu::Buffer,
    ) -> Result<GptModel> {
        let graph = GptGraph::new(ctx, config, &params, (batch, config.block), scale, true)?;
        Ok(GptModel { params, graph })
    }

    /// The training graph (tokens, logits, loss).
    pub fn gpt_graph(&self) -> &GptGraph {
        &self.graph
    }

    fn tokens_of<'a>(&self, inputs: Inputs<'a>) -> Result<&'a [u32]> {
        match inputs {
            Inputs::Tokens(t) => Ok(t),
            Inputs::Rows(_) => Err(Error::InvalidArgument(
                "the GPT reads token ids (Inputs::Tokens), not f32 rows".into(),
            )),
        }
    }
}

impl Model for GptModel {
    type Config = GptConfig;
    const KIND: &'static str = "gpt";

    /// GPT-2's initialisation from `seed` ([`GptWeights::init`]); checks the device's
    /// limits ([`check_fits`]) before building anything.
    fn build(
        ctx: &LayerCtx<'_>,
        config: &GptConfig,
        batch: usize,
        seed: u64,
        scale: &wgpu::Buffer,
    ) -> Result<GptModel> {
        check_fits(ctx.gpu, config, batch, config.block, ctx.policy.activation)?;
        let weights = GptWeights::init(config, seed)?;
        let params = upload_params(ctx, &weights)?;
        drop(weights);
        GptModel::from_params(ctx, config, params, batch, scale)
    }

    fn config(&self) -> &GptConfig {
        self.graph.config()
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn graph(&self) -> &Graph {
        self.graph.graph()
    }

    fn layout(&self) -> BatchLayout {
        BatchLayout {
            batch: self.graph.batch(),
            inputs_per_row: self.graph.seq_len(),
            tokens: true,
            targets_per_row: self.graph.seq_len(),
            classes: self.graph.config().vocab,
        }
    }

    fn set_batch(&self, batch: &Batch<'_>) -> Result<()> {
        let tokens = self.tokens_of(batch.inputs)?;
        self.graph.set_batch(tokens, batch.targets)
    }

    fn input_buffer(&self) -> &wgpu::Buffer {
        self.graph.tokens_buffer()
    }

    fn encode_inputs(&self, inputs: Inputs<'_>) -> Result<Vec<u8>> {
        let tokens = self.tokens_of(inputs)?;
        let rows = self.graph.batch() * self.graph.seq_len();
        if tokens.len() != rows {
            return Err(Error::DataLength {
                shape: vec![self.graph.batch(), self.graph.seq_len()],
                expected: rows,
                got: tokens.len(),
            });
        }
        check_tokens(tokens, self.graph.config().vocab)?;
        Ok(bytemuck::cast_slice(tokens).to_vec())
    }

    fn targets(&self) -> &wgpu::Buffer {
        self.graph.loss_layer().labels()
    }

    fn loss(&self) -> &Tensor {
        self.graph.loss()
    }

    fn losses(&self) -> &Tensor {
        self.graph.loss_layer().losses()
    }
}
