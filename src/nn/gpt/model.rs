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
use crate::nn::{check_plan, DeviceBudget, GradPlan, GradValue, Role, SizePlan};
use crate::nn::{Batch, BatchLayout, Inputs, LayerCtx, Model, Param, XentLoss};
use crate::ops::embedding::{check_tokens, TokenIndex};
use crate::ops::layernorm::DEFAULT_EPS;
use crate::precision::{Policy, Precision};
use crate::{DType, Error, Gpu, Result, Tensor};
use std::sync::Arc;

/// Checks that a GPT graph of `config` with `batch` sequences of `t` tokens in `dtype`
/// activations, with its parameters, fits the device's buffer limits before anything
/// is allocated: its [`SizePlan`] ([`plan_params`] and [`plan_graph`], with backward).
/// A buffer past a limit is an [`Error::DoesNotFit`] naming it, its size, the limit and
/// the largest batch that fits.
pub fn check_fits(
    gpu: &Gpu,
    config: &GptConfig,
    batch: usize,
    t: usize,
    dtype: DType,
) -> Result<()> {
    let precision = match dtype {
        DType::F16 => Precision::F16,
        DType::BF16 => Precision::BF16,
        _ => Precision::F32,
    };
    let budget = DeviceBudget::limits_only(gpu.caps());
    check_plan(&budget, "batch", batch, |batch| {
        let mut plan = SizePlan::new(Policy::new(precision), batch);
        plan_params(&mut plan, config)?;
        plan_graph(&mut plan, config, (batch, t), true)?;
        Ok(plan)
    })
}

/// Adds every buffer [`GptGraph::new`] allocates for `batch` sequences of `t` tokens
/// under `policy`, in its order, to `plan` (see [`SizePlan`]); `backward` as there.
/// Groups: `embedding`, `transformer.h.N`, `head`.
pub fn plan_graph(
    plan: &mut SizePlan,
    config: &GptConfig,
    (batch, t): (usize, usize),
    backward: bool,
) -> Result<()> {
    config.validate()?;
    if batch == 0 || t == 0 {
        return Err(Error::Empty {
            what: "GPT batch",
            shape: vec![batch, t],
        });
    }
    let rows = batch.checked_mul(t).ok_or_else(|| {
        Error::InvalidArgument(format!("{batch} sequences of {t} tokens overflow"))
    })?;
    let act = plan.policy.activation;
    let (v, c, h) = (config.vocab, config.n_embd, config.n_head);
    let (state, emb) = ("inputs", "embedding");
    plan.value(state, "tokens", &[rows], DType::U32, false);
    if backward {
        plan.raw(
            state,
            "token index offsets",
            Role::Scratch,
            &[v + 1],
            DType::U32,
        );
        plan.raw(
            state,
            "token index positions",
            Role::Scratch,
            &[rows],
            DType::U32,
        );
    }
    let square = [batch, h, t, t];
    plan.scratch(
        "attention",
        "attention scores (shared)",
        &square,
        DType::F32,
    );
    if backward {
        plan.scratch("attention", "attention dS (shared)", &square, act);
    }
    let wide = |k: usize| [rows, k * c];
    // Values with a gradient go to `grads` too, and each op with the values it reads
    // and makes: backward's gradient buffers are planned from their lifetimes.
    let mut grads = GradPlan::new();
    let x0 = "embedding output (residual stream)";
    let mut x = grad_value(plan, &mut grads, emb, x0, &wide(1), DType::F32);
    grads.op(&[], &[x]);
    if backward && config.n_layer > 0 {
        // Each residual-stream value feeds a LayerNorm and a residual add; the LayerNorm's
        // input gradient (which cannot accumulate) goes through one shared scratch.
        let name = "residual-stream gradient scratch";
        plan.scratch(emb, name, &wide(1), DType::F32);
    }
    let layer_norm = |plan: &mut SizePlan, grads: &mut GradPlan, x, group: &str, name: &str| {
        let y = grad_value(plan, grads, group, &format!("{name} output"), &wide(1), act);
        plan.value(group, &format!("{name} mean"), &[rows], DType::F32, false);
        plan.value(group, &format!("{name} rstd"), &[rows], DType::F32, false);
        plan.scratch(group, &format!("{name} row terms"), &[rows, 2], DType::F32);
        grads.op(&[x], &[y]);
        y
    };
    // An op of one input and one output.
    let unary = |plan: &mut SizePlan, grads: &mut GradPlan, x, group: &str, name: &str, k| {
        let y = grad_value(plan, grads, group, name, &wide(k), act);
        grads.op(&[x], &[y]);
        y
    };
    for layer in 0..config.n_layer {
        let p = block_prefix(layer);
        let g = p.as_str();
        let a = layer_norm(plan, &mut grads, x, g, &format!("{p}.ln_1"));
        let qkv = format!("{p}.attn.c_attn output (qkv)");
        let qkv = unary(plan, &mut grads, a, g, &qkv, 3);
        plan.value(g, &format!("{p}.attn probabilities"), &square, act, false);
        let y = unary(plan, &mut grads, qkv, g, &format!("{p}.attn output"), 1);
        let proj = format!("{p}.attn.c_proj output");
        let proj = unary(plan, &mut grads, y, g, &proj, 1);
        let r1 = format!("{p} residual 1");
        let r1 = grad_value(plan, &mut grads, g, &r1, &wide(1), DType::F32);
        grads.op(&[x, proj], &[r1]);
        let m = layer_norm(plan, &mut grads, r1, g, &format!("{p}.ln_2"));
        let m = unary(plan, &mut grads, m, g, &format!("{p}.mlp.c_fc output"), 4);
        let m = unary(plan, &mut grads, m, g, &format!("{p}.mlp GELU output"), 4);
        let m = unary(plan, &mut grads, m, g, &format!("{p}.mlp.c_proj output"), 1);
        let r2 = format!("{p} residual 2");
        x = grad_value(plan, &mut grads, g, &r2, &wide(1), DType::F32);
        grads.op(&[r1, m], &[x]);
    }
    let xf = layer_norm(plan, &mut grads, x, "head", "transformer.ln_f");
    let logits = grad_value(plan, &mut grads, "head", "logits", &[rows, v], act);
    grads.op(&[xf], &[logits]);
    // The loss: its outputs need no gradient.
    grads.op(&[logits], &[]);
    if backward {
        plan.grads(&grads);
    }
    plan.value("head", "labels", &[rows], DType::U32, false);
    plan.value("head", "log-sum-exp", &[rows], DType::F32, false);
    plan.value("head", "losses", &[rows], DType::F32, false);
    plan.value("head", "mean loss", &[1], DType::F32, false);
    if backward {
        // The partial sums of the biases' and LayerNorms' gradients over many rows.
        let mut sums = vec![(rows, c, 2)];
        if config.n_layer > 0 {
            sums.extend([(rows, 3 * c, 1), (rows, 4 * c, 1)]);
        }
        plan.partial_sums("backward", &sums);
    }
    Ok(())
}

/// A forward value of `plan` whose gradient backward writes (planned through `grads`).
fn grad_value(
    plan: &mut SizePlan,
    grads: &mut GradPlan,
    group: &str,
    name: &str,
    shape: &[usize],
    dtype: DType,
) -> GradValue {
    plan.value(group, name, shape, dtype, false);
    grads.value(group, name, shape, dtype)
}

/// The buffers a graph of `config` built by [`GptGraph::borrowing`] allocates of its own
/// (the rest is its donor's): the tokens, the loss's labels and log-sum-exp, and each
/// LayerNorm's backward row terms (allocated with the op, unused without backward).
/// Groups as in [`plan_graph`].
pub fn plan_borrowing_graph(
    plan: &mut SizePlan,
    config: &GptConfig,
    (batch, t): (usize, usize),
) -> Result<()> {
    config.validate()?;
    let rows = batch.checked_mul(t).ok_or_else(|| {
        Error::InvalidArgument(format!("{batch} sequences of {t} tokens overflow"))
    })?;
    plan.value("inputs", "tokens", &[rows], DType::U32, false);
    let row_terms = |plan: &mut SizePlan, group: &str, name: &str| {
        plan.scratch(group, &format!("{name} row terms"), &[rows, 2], DType::F32);
    };
    for layer in 0..config.n_layer {
        let p = block_prefix(layer);
        row_terms(plan, &p, &format!("{p}.ln_1"));
        row_terms(plan, &p, &format!("{p}.ln_2"));
    }
    row_terms(plan, "head", "transformer.ln_f");
    plan.value("head", "labels", &[rows], DType::U32, false);
    plan.value("head", "log-sum-exp", &[rows], DType::F32, false);
    Ok(())
}

/// The parameters [`upload_params`] allocates (groups: `embedding`, `transformer.h.N`,
/// `head` for the final LayerNorm).
pub fn plan_params(plan: &mut SizePlan, config: &GptConfig) -> Result<()> {
    config.validate()?;
    for spec in config.param_specs() {
        let compute = if spec.is_matrix() && spec.name != WPE {
            plan.policy.matmul_operand
        } else {
            DType::F32
        };
        let group = match spec.name.strip_prefix("transformer.h.") {
            Some(rest) => format!("transformer.h.{}", rest.split('.').next().unwrap_or("")),
            None if spec.name.starts_with("transformer.ln_f") => "head".into(),
            None => "embedding".into(),
        };
        plan.param(&group, &spec.name, &spec.shape, compute);
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
    tokens: Tensor,
    // index: the batch's token index for the embedding's backward (training graphs)
    index: Option<Arc<TokenIndex>>,
    logits: ValueId,
    loss: XentLoss,
    /// The attention scratch the layers share (a borrowing graph takes its scores).
    attention: AttentionScratch,
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
        GptGraph::build(ctx, config, store, (batch, t), scale, backward, None)
    }

    /// A forward-only graph (evaluation) that allocates no activations of its own: its
    /// op outputs, attention probabilities and attention scores are `donor`'s, a graph
    /// of the same model, batch and sequence length (the training graph; see
    /// [`GraphBuilder::borrow_forward_buffers`] for why that is safe). Its tokens, labels
    /// and log-sum-exp are its own ([`plan_borrowing_graph`]). Running it overwrites
    /// `donor`'s loss, logits and activations, and the reverse.
    pub fn borrowing(
        ctx: &LayerCtx<'_>,
        store: &ParamStore,
        scale: &wgpu::Buffer,
        donor: &GptGraph,
    ) -> Result<GptGraph> {
        let dims = (donor.batch, donor.t);
        GptGraph::build(ctx, &donor.config, store, dims, scale, false, Some(donor))
    }

    fn build(
        ctx: &LayerCtx<'_>,
        config: &GptConfig,
        store: &ParamStore,
        (batch, t): (usize, usize),
        scale: &wgpu::Buffer,
        backward: bool,
        donor: Option<&GptGraph>,
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
        let tokens = Tensor::zeros(gpu, &[rows], DType::U32)?;
        let index = match backward {
            true => Some(Arc::new(TokenIndex::new(gpu, config.vocab, rows)?)),
            false => None,
        };
        let scratch = match donor {
            // Forward uses only the scores.
            Some(d) if !backward => AttentionScratch {
                scores: d.attention.scores.clone(),
                dscores: None,
            },
            _ => AttentionScratch::new(
                gpu,
                (batch, config.n_head, t),
                ctx.policy.activation,
                backward,
            )?,
        };
        let (wte, wpe) = (param(WTE.into())?, param(WPE.into())?);

        let mut g = GraphBuilder::new(ctx, store);
        if let Some(d) = donor {
            g.borrow_forward_buffers(&d.graph);
        }
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
            attention: scratch,
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
            .write_buffer(self.tokens.buffer(), 0, bytemuck::cast_slice(tokens));
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
    /// The (B*T) u32 tokens [`GptGraph::set_batch`] fills.
    pub fn tokens(&self) -> &Tensor {
        &self.tokens
    }
    /// The buffer of [`GptGraph::tokens`].
    pub fn tokens_buffer(&self) -> &wgpu::Buffer {
        self.tokens.buffer()
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

    /// The parameters and the training graph for `batch` sequences of `block` tokens.
    fn plan(config: &GptConfig, batch: usize, policy: Policy) -> Result<Option<SizePlan>> {
        let mut plan = SizePlan::new(policy, batch);
        plan_params(&mut plan, config)?;
        plan_graph(&mut plan, config, (batch, config.block), true)?;
        Ok(Some(plan))
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

    fn targets(&self) -> &Tensor {
        self.graph.loss_layer().labels()
    }

    fn loss(&self) -> &Tensor {
        self.graph.loss()
    }

    fn losses(&self) -> &Tensor {
        self.graph.loss_layer().losses()
    }
}
