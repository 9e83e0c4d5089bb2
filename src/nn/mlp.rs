//! A multi-layer perceptron classifier: Linear -> [LayerNorm] -> activation per hidden
//! layer, a final Linear to logits, and the fused softmax cross-entropy loss. Forward,
//! loss and backward of the whole stack encode into one compute pass with no readback.

use super::init::SplitMix64;
use super::{
    output_grad, Activation, ActivationLayer, Layer, LayerCtx, LayerNorm, Linear, Node, Param,
    SoftmaxCrossEntropy,
};
use crate::amp::Policy;
use crate::ops::layernorm::DEFAULT_EPS;
use crate::{Error, Gpu, Result, Tensor};
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

/// One module of the MLP's `nn.Sequential` equivalent.
#[derive(Debug)]
pub enum MlpLayer {
    Linear(Linear),
    LayerNorm(LayerNorm),
    Activation(ActivationLayer),
}

impl MlpLayer {
    fn layer(&self) -> &dyn Layer {
        match self {
            MlpLayer::Linear(l) => l,
            MlpLayer::LayerNorm(l) => l,
            MlpLayer::Activation(l) => l,
        }
    }
    fn layer_mut(&mut self) -> &mut dyn Layer {
        match self {
            MlpLayer::Linear(l) => l,
            MlpLayer::LayerNorm(l) => l,
            MlpLayer::Activation(l) => l,
        }
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
    // input: (B, widths[0]) activation dtype, no gradient
    input: Node,
    layers: Vec<MlpLayer>,
    loss: SoftmaxCrossEntropy,
}

impl Mlp {
    /// Builds the model and all its Dispatches. Parameters are initialised like PyTorch
    /// `nn.Linear` from a SplitMix64 stream seeded by `seed`. `ctx` carries the found-inf
    /// flag that 16-bit stores raise (the loss scaler's) and the parameter-gradient mode;
    /// `scale` is the f32 buffer whose element 0 seeds backward (the loss scaler's scale,
    /// or [`constant_scale`](crate::amp::constant_scale)`(gpu, 1.0)`).
    pub fn new(
        ctx: &LayerCtx<'_>,
        config: &MlpConfig,
        batch: usize,
        seed: u64,
        scale: &wgpu::Buffer,
    ) -> Result<Mlp> {
        config.validate()?;
        if batch == 0 {
            return Err(Error::Empty {
                what: "MLP batch",
                shape: vec![0, config.inputs()],
            });
        }
        let mut rng = SplitMix64::new(seed);
        let input = Node::new(
            ctx.gpu,
            &[batch, config.inputs()],
            ctx.policy.activation,
            false,
        )?;
        let mut layers: Vec<MlpLayer> = Vec::new();
        let mut index = 0usize;
        let last = config.widths.len() - 2;
        for (i, pair) in config.widths.windows(2).enumerate() {
            let current = layers.last().map_or(&input, |l| l.layer().output()).clone();
            let linear = Linear::new(
                ctx,
                &current,
                &index.to_string(),
                pair[0],
                pair[1],
                config.bias,
                &mut rng,
            )?;
            layers.push(MlpLayer::Linear(linear));
            index += 1;
            if i == last {
                break;
            }
            if config.layer_norm {
                let x = layers[layers.len() - 1].layer().output().clone();
                let ln = LayerNorm::new(ctx, &x, &index.to_string(), DEFAULT_EPS)?;
                layers.push(MlpLayer::LayerNorm(ln));
                index += 1;
            }
            let x = layers[layers.len() - 1].layer().output().clone();
            layers.push(MlpLayer::Activation(ActivationLayer::new(
                ctx,
                &x,
                config.activation,
            )?));
            index += 1;
        }
        let logits = layers[layers.len() - 1].layer().output().clone();
        output_grad("mlp logits", &logits)?;
        let loss = SoftmaxCrossEntropy::new(ctx, &logits, scale)?;
        Ok(Mlp {
            config: config.clone(),
            policy: ctx.policy,
            gpu: ctx.gpu.clone(),
            input,
            layers,
            loss,
        })
    }

    /// Uploads one batch (queued with `queue.write_buffer`; ordered before the next
    /// submission). `x` is rounded to the activation dtype on the host. Labels are checked
    /// first: an out-of-range label gives `Error::LabelOutOfRange` and nothing is written.
    // x: (B, widths[0]) row-major
    // labels: (B), each < classes
    pub fn set_batch(&self, x: &[f32], labels: &[u32]) -> Result<()> {
        let expected = self.input.value.len();
        if x.len() != expected {
            return Err(Error::DataLength {
                shape: self.input.shape().to_vec(),
                expected,
                got: x.len(),
            });
        }
        self.loss.set_labels(&self.gpu, labels)?;
        self.input.value.write_f32(x)
    }

    /// Records forward through every layer and the loss.
    pub fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for l in &self.layers {
            l.layer().encode_forward(pass);
        }
        self.loss.encode_forward(pass);
    }

    /// Records backward from the (scaled) loss through every layer.
    pub fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.loss.encode_backward(pass);
        for l in self.layers.iter().rev() {
            l.layer().encode_backward(pass);
        }
    }

    /// Records a whole forward + backward (the trainer adds the optimizer after it).
    pub fn encode_forward_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.encode_forward(pass);
        self.encode_backward(pass);
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
        self.layers
            .iter()
            .flat_map(|l| l.layer().params())
            .collect()
    }

    /// Every parameter, mutable (write contents; do not replace tensors).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.layer_mut().params_mut())
            .collect()
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }

    pub fn config(&self) -> &MlpConfig {
        &self.config
    }
    pub fn policy(&self) -> Policy {
        self.policy
    }
    pub fn batch(&self) -> usize {
        self.input.shape()[0]
    }
    pub fn layers(&self) -> &[MlpLayer] {
        &self.layers
    }
    /// The input node (B, widths[0]) in the activation dtype.
    pub fn input(&self) -> &Node {
        &self.input
    }
    /// The loss layer (labels, per-example and mean losses).
    pub fn loss_layer(&self) -> &SoftmaxCrossEntropy {
        &self.loss
    }
    /// Logits (B, classes) in the activation dtype, written by forward.
    pub fn logits(&self) -> &Tensor {
        &self.loss.logits().value
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
