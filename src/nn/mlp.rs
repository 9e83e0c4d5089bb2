//! A multi-layer perceptron classifier: Linear -> [LayerNorm] -> activation per hidden
//! layer, a final Linear to logits, and the fused softmax cross-entropy loss, built as one
//! static [`Graph`]. Forward, loss and backward of the whole stack encode into one compute
//! pass with no readback.

use super::graph::{Graph, GraphBuilder, ParamStore, ValueId};
use super::init::SplitMix64;
use super::model::{Batch, BatchLayout, Inputs, Model};
use super::plan::{GradPlan, GradValue, SizePlan};
use super::{
    activation, layer_norm, layer_norm_params, linear, linear_params, softmax_cross_entropy,
    Activation, LayerCtx, Param, XentLoss,
};
use crate::ops::layernorm::DEFAULT_EPS;
use crate::precision::Policy;
use crate::{DType, Error, Gpu, Result, Tensor};
use std::fmt;

/// The architecture of an [`Mlp`]. Displays as (and parses from) one line such as
/// `widths=64,128,10;activation=gelu;layer_norm=true;bias=true`, which checkpoint
/// metadata stores; it is also serde-serialisable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MlpConfig {
    /// Input width, hidden widths..., number of classes (at least two entries).
    pub widths: Vec<usize>,
    pub activation: Activation,
    /// A LayerNorm after each hidden Linear (before the activation).
    pub layer_norm: bool,
    /// Linear layers have a bias.
    pub bias: bool,
}

impl MlpConfig {
    pub fn validate(&self) -> Result<()> {
        if self.widths.len() < 2 || self.widths.contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "MLP widths {:?}: need an input width and a class count, all at least 1",
                self.widths
            )));
        }
        Ok(())
    }

    pub fn inputs(&self) -> usize {
        self.widths[0]
    }

    pub fn classes(&self) -> usize {
        *self.widths.last().unwrap_or(&0)
    }
}

impl fmt::Display for MlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths: Vec<String> = self.widths.iter().map(|w| w.to_string()).collect();
        write!(
            f,
            "widths={};activation={};layer_norm={};bias={}",
            widths.join(","),
            self.activation,
            self.layer_norm,
            self.bias
        )
    }
}

impl std::str::FromStr for MlpConfig {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |m: String| Error::InvalidArgument(format!("MLP config `{s}`: {m}"));
        let (mut widths, mut activation, mut layer_norm, mut bias) = (None, None, None, None);
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not key=value")))?;
            let flag = |v: &str| {
                v.parse::<bool>()
                    .map_err(|_| bad(format!("{key}: `{v}` is not true/false")))
            };
            match key.trim() {
                "widths" => {
                    let w: std::result::Result<Vec<usize>, _> = value
                        .split(',')
                        .map(|w| w.trim().parse::<usize>())
                        .collect();
                    widths = Some(w.map_err(|e| bad(format!("widths: {e}")))?);
                }
                "activation" => activation = Some(value.trim().parse::<Activation>()?),
                "layer_norm" => layer_norm = Some(flag(value.trim())?),
                "bias" => bias = Some(flag(value.trim())?),
                other => return Err(bad(format!("unknown key `{other}`"))),
            }
        }
        let config = MlpConfig {
            widths: widths.ok_or_else(|| bad("no widths".into()))?,
            activation: activation.unwrap_or(Activation::Gelu),
            layer_norm: layer_norm.unwrap_or(false),
            bias: bias.unwrap_or(true),
        };
        config.validate()?;
        Ok(config)
    }
}

/// An MLP classifier built for a fixed batch size.
///
/// Parameter names follow the equivalent PyTorch `nn.Sequential` (every Linear, LayerNorm
/// and activation counts one index): with `layer_norm`, `0.weight, 0.bias` (Linear),
/// `1.weight, 1.bias` (LayerNorm), activation 2, then `3.weight` ...
#[derive(Debug)]
pub struct Mlp {
    config: MlpConfig,
    policy: Policy,
    gpu: Gpu,
    params: ParamStore,
    graph: Graph,
    // input: (B, widths[0]) activation dtype, no gradient
    input: ValueId,
    loss: XentLoss,
}

impl Mlp {
    /// Builds the model and all its Dispatches. Parameters are initialised like PyTorch
    /// `nn.Linear` from a SplitMix64 stream seeded by `seed`. `ctx` carries the found-inf
    /// flag that 16-bit stores raise (the loss scaler's) and the parameter-gradient mode;
    /// `scale` is the f32 buffer whose element 0 seeds backward (the loss scaler's scale,
    /// or [`constant_scale`](crate::precision::constant_scale)`(gpu, 1.0)`).
    pub fn new(
        ctx: &LayerCtx<'_>,
        config: &MlpConfig,
        batch: usize,
        seed: u64,
        scale: &wgpu::Buffer,
    ) -> Result<Mlp> {
        let params = Mlp::init_params(ctx, config, seed)?;
        let (graph, input, loss) = Mlp::build_graph(ctx, config, &params, batch, scale, true)?;
        Ok(Mlp {
            config: config.clone(),
            policy: ctx.policy,
            gpu: ctx.gpu.clone(),
            params,
            graph,
            input,
            loss,
        })
    }

    /// The parameters in state-dict order, initialised from `seed` (the Linears draw from
    /// one SplitMix64 stream in order, weight then bias).
    pub fn init_params(ctx: &LayerCtx<'_>, config: &MlpConfig, seed: u64) -> Result<ParamStore> {
        config.validate()?;
        let mut rng = SplitMix64::new(seed);
        let mut store = ParamStore::new();
        let mut index = 0usize;
        let last = config.widths.len() - 2;
        for (i, pair) in config.widths.windows(2).enumerate() {
            let prefix = index.to_string();
            linear_params(
                ctx,
                &mut store,
                &prefix,
                pair[0],
                pair[1],
                config.bias,
                &mut rng,
            )?;
            index += 1;
            if i == last {
                break;
            }
            if config.layer_norm {
                layer_norm_params(ctx, &mut store, &index.to_string(), pair[1])?;
                index += 1;
            }
            index += 1; // the activation
        }
        Ok(store)
    }

    /// The graph for `batch` rows over `params` (from [`Mlp::init_params`], or another
    /// model's store: several graphs share the same parameter tensors), with backward
    /// when `backward` (training) or forward only (evaluation). Returns the graph, its
    /// input value and the loss.
    pub fn build_graph(
        ctx: &LayerCtx<'_>,
        config: &MlpConfig,
        params: &ParamStore,
        batch: usize,
        scale: &wgpu::Buffer,
        backward: bool,
    ) -> Result<(Graph, ValueId, XentLoss)> {
        config.validate()?;
        if batch == 0 {
            return Err(Error::Empty {
                what: "MLP batch",
                shape: vec![0, config.inputs()],
            });
        }
        let param = |name: String| {
            params.find(&name).ok_or_else(|| {
                Error::InvalidArgument(format!("MLP `{config}`: no parameter `{name}`"))
            })
        };
        let mut g = GraphBuilder::new(ctx, params);
        let input = g.input(&[batch, config.inputs()], ctx.policy.activation)?;
        let mut x = input;
        let mut index = 0usize;
        let last = config.widths.len() - 2;
        for i in 0..=last {
            let bias = match config.bias {
                true => Some(param(format!("{index}.bias"))?),
                false => None,
            };
            x = linear(&mut g, x, param(format!("{index}.weight"))?, bias)?;
            index += 1;
            if i == last {
                break;
            }
            if config.layer_norm {
                let (gamma, beta) = (
                    param(format!("{index}.weight"))?,
                    param(format!("{index}.bias"))?,
                );
                x = layer_norm(&mut g, x, gamma, beta, DEFAULT_EPS)?.y;
                index += 1;
            }
            x = activation(&mut g, x, config.activation)?;
            index += 1;
        }
        let loss = softmax_cross_entropy(&mut g, x, scale)?;
        let graph = if backward {
            g.finish()?
        } else {
            g.finish_forward()
        };
        Ok((graph, input, loss))
    }

    /// Every buffer [`Mlp::new`] allocates for `batch` rows under `policy`, in the
    /// order it allocates them, without a GPU (see [`SizePlan`]). Groups are the
    /// `nn.Sequential` indices, then `loss`.
    pub fn plan(config: &MlpConfig, batch: usize, policy: Policy) -> Result<SizePlan> {
        config.validate()?;
        if batch == 0 {
            return Err(Error::Empty {
                what: "MLP batch",
                shape: vec![0, config.inputs()],
            });
        }
        let mut plan = SizePlan::new(policy, batch);
        let act = policy.activation;
        // Parameters (Mlp::init_params).
        let mut index = 0usize;
        let last = config.widths.len() - 2;
        for (i, w) in config.widths.windows(2).enumerate() {
            let group = index.to_string();
            plan.param(
                &group,
                &format!("{index}.weight"),
                &[w[1], w[0]],
                policy.matmul_operand,
            );
            if config.bias {
                plan.param(&group, &format!("{index}.bias"), &[w[1]], DType::F32);
            }
            index += 1;
            if i == last {
                break;
            }
            if config.layer_norm {
                let group = index.to_string();
                plan.param(&group, &format!("{index}.weight"), &[w[1]], DType::F32);
                plan.param(&group, &format!("{index}.bias"), &[w[1]], DType::F32);
                index += 1;
            }
            index += 1;
        }
        // The graph (Mlp::build_graph): every value, then the gradients backward creates.
        plan.value("input", "input", &[batch, config.inputs()], act, false);
        // Values with a gradient go to `grads` too, and each op with the values it reads
        // and makes: backward's gradient buffers are planned from their lifetimes.
        let mut grads = GradPlan::new();
        // The input needs no gradient.
        let mut x: Option<GradValue> = None;
        let mut op = |plan: &mut SizePlan, x: Option<GradValue>, group: &str, rows: &[usize]| {
            plan.value(group, &format!("{group} output"), rows, act, false);
            let y = grads.value(group, &format!("{group} output"), rows, act);
            grads.op(x.as_slice(), &[y]);
            Some(y)
        };
        let mut index = 0usize;
        for (i, w) in config.widths.windows(2).enumerate() {
            let rows = [batch, w[1]];
            x = op(&mut plan, x, &index.to_string(), &rows);
            index += 1;
            if i == last {
                break;
            }
            if config.layer_norm {
                let group = index.to_string();
                x = op(&mut plan, x, &group, &rows);
                for stat in ["mean", "rstd"] {
                    plan.value(
                        &group,
                        &format!("{index} {stat}"),
                        &[batch],
                        DType::F32,
                        false,
                    );
                }
                plan.scratch(
                    &group,
                    &format!("{index} row terms"),
                    &[batch, 2],
                    DType::F32,
                );
                index += 1;
            }
            x = op(&mut plan, x, &index.to_string(), &rows);
            index += 1;
        }
        // The loss: its outputs need no gradient.
        grads.op(x.as_slice(), &[]);
        plan.grads(&grads);
        plan.value("loss", "labels", &[batch], DType::U32, false);
        plan.value("loss", "log-sum-exp", &[batch], DType::F32, false);
        plan.value("loss", "losses", &[batch], DType::F32, false);
        plan.value("loss", "mean loss", &[1], DType::F32, false);
        // Backward's partial sums for a large batch: each bias (one buffer), each
        // LayerNorm (two).
        let outs = &config.widths[1..];
        let biases = outs.iter().filter(|_| config.bias).map(|&w| (batch, w, 1));
        let norms = outs[..outs.len() - 1]
            .iter()
            .filter(|_| config.layer_norm)
            .map(|&w| (batch, w, 2));
        plan.partial_sums("backward", &biases.chain(norms).collect::<Vec<_>>());
        Ok(plan)
    }

    /// Uploads one batch (queued with `queue.write_buffer`; ordered before the next
    /// submission). `x` is rounded to the activation dtype on the host. Labels are checked
    /// first: an out-of-range label gives `Error::LabelOutOfRange` and nothing is written.
    // x: (B, widths[0]) row-major
    // labels: (B), each < classes
    pub fn set_batch(&self, x: &[f32], labels: &[u32]) -> Result<()> {
        let input = self.input();
        let expected = input.len();
        if x.len() != expected {
            return Err(Error::DataLength {
                shape: input.shape().to_vec(),
                expected,
                got: x.len(),
            });
        }
        self.loss.set_labels(&self.gpu, labels)?;
        input.write_f32(x)
    }

    /// Records forward through every layer and the loss.
    pub fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.graph.encode_forward(pass);
    }

    /// Records backward from the (scaled) loss through every layer.
    pub fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.graph.encode_backward(pass);
    }

    /// Records a whole forward + backward (the trainer adds the optimizer after it).
    pub fn encode_forward_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.graph.encode_forward_backward(pass);
    }

    /// Submits forward only (evaluation): one command buffer.
    pub fn forward(&self) -> Result<()> {
        self.submit("mlp forward", |pass| self.encode_forward(pass))
    }

    /// Submits forward + backward as one command buffer with one compute pass.
    pub fn forward_backward(&self) -> Result<()> {
        self.submit("mlp forward+backward", |pass| {
            self.encode_forward_backward(pass)
        })
    }

    fn submit(&self, label: &str, f: impl FnOnce(&mut wgpu::ComputePass<'_>)) -> Result<()> {
        let mut enc = self.gpu.encoder(label);
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: None,
            });
            f(&mut pass);
        }
        self.gpu.submit(enc.finish())?;
        Ok(())
    }

    /// Every parameter in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        self.params.params().iter().collect()
    }

    /// Every parameter, mutable (write contents; do not replace tensors).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.params.params_mut().iter_mut().collect()
    }

    /// The parameter store the graph is built over.
    pub fn param_store(&self) -> &ParamStore {
        &self.params
    }

    /// The model's graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.params.num_scalars()
    }

    pub fn config(&self) -> &MlpConfig {
        &self.config
    }
    pub fn policy(&self) -> Policy {
        self.policy
    }
    pub fn batch(&self) -> usize {
        self.loss.batch()
    }
    /// The input (B, widths[0]) in the activation dtype.
    pub fn input(&self) -> &Tensor {
        self.graph.value(self.input)
    }
    /// The loss (labels, per-example and mean losses).
    pub fn loss_layer(&self) -> &XentLoss {
        &self.loss
    }
    /// Logits (B, classes) in the activation dtype, written by forward.
    pub fn logits(&self) -> &Tensor {
        self.graph.value(self.loss.logits())
    }
    /// The mean loss (1) f32, written by forward.
    pub fn loss(&self) -> &Tensor {
        self.loss.loss()
    }

    /// Reads the mean loss of the last forward (one readback).
    pub async fn read_loss(&self) -> Result<f32> {
        Ok(self.loss().read_f32().await?[0])
    }

    /// Reads the logits of the last forward, widened to f32 (one readback).
    pub async fn read_logits(&self) -> Result<Vec<f32>> {
        self.logits().read_f32().await
    }

    /// Blocking [`Mlp::read_loss`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_loss_blocking(&self) -> Result<f32> {
        pollster::block_on(self.read_loss())
    }

    /// Blocking [`Mlp::read_logits`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_logits_blocking(&self) -> Result<Vec<f32>> {
        pollster::block_on(self.read_logits())
    }
}

impl Model for Mlp {
    type Config = MlpConfig;
    const KIND: &'static str = "mlp";

    fn build(
        ctx: &LayerCtx<'_>,
        config: &MlpConfig,
        batch: usize,
        seed: u64,
        scale: &wgpu::Buffer,
    ) -> Result<Mlp> {
        Mlp::new(ctx, config, batch, seed, scale)
    }

    fn config(&self) -> &MlpConfig {
        &self.config
    }

    fn plan(config: &MlpConfig, batch: usize, policy: Policy) -> Result<Option<SizePlan>> {
        Mlp::plan(config, batch, policy).map(Some)
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn layout(&self) -> BatchLayout {
        BatchLayout {
            batch: self.batch(),
            inputs_per_row: self.config.inputs(),
            tokens: false,
            targets_per_row: 1,
            classes: self.config.classes(),
        }
    }

    fn set_batch(&self, batch: &Batch<'_>) -> Result<()> {
        match batch.inputs {
            Inputs::Rows(x) => Mlp::set_batch(self, x, batch.targets),
            Inputs::Tokens(_) => Err(tokens_refused()),
        }
    }

    fn input_buffer(&self) -> &wgpu::Buffer {
        self.input().buffer()
    }

    fn encode_inputs(&self, inputs: Inputs<'_>) -> Result<Vec<u8>> {
        let input = self.input();
        match inputs {
            Inputs::Rows(x) if x.len() == input.len() => Ok(input.dtype().encode(x)),
            Inputs::Rows(x) => Err(Error::DataLength {
                shape: input.shape().to_vec(),
                expected: input.len(),
                got: x.len(),
            }),
            Inputs::Tokens(_) => Err(tokens_refused()),
        }
    }

    fn targets(&self) -> &Tensor {
        self.loss.labels()
    }

    fn loss(&self) -> &Tensor {
        self.loss.loss()
    }

    fn losses(&self) -> &Tensor {
        self.loss.losses()
    }

    fn logits(&self) -> Option<&Tensor> {
        Some(Mlp::logits(self))
    }

    fn pytorch_module(&self) -> Option<String> {
        Some(pytorch_module(&self.config))
    }
}

fn tokens_refused() -> Error {
    Error::InvalidArgument("an MLP reads f32 feature rows, not token ids".into())
}

/// The PyTorch module whose `state_dict()` names and shapes the weights match.
fn pytorch_module(config: &MlpConfig) -> String {
    let act = match config.activation {
        Activation::Gelu => "nn.GELU(approximate='tanh')",
        Activation::Relu => "nn.ReLU()",
    };
    let mut parts = Vec::new();
    let last = config.widths.len() - 2;
    for (i, w) in config.widths.windows(2).enumerate() {
        parts.push(format!("nn.Linear({}, {})", w[0], w[1]));
        if i == last {
            break;
        }
        if config.layer_norm {
            parts.push(format!("nn.LayerNorm({})", w[1]));
        }
        parts.push(act.to_string());
    }
    format!("nn.Sequential({})", parts.join(", "))
}
