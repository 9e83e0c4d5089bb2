//! LayerNorm over the feature dimension: f32 statistics and f32 affine parameters
//! (`weight` = gamma, init 1; `bias` = beta, init 0, as PyTorch `nn.LayerNorm`).

use super::{batch_width, output_grad, Layer, LayerCtx, Node, Param};
use crate::kernels::Dispatch;
use crate::ops::layernorm::{self, Stats};
use crate::{DType, Result, Tensor};

#[derive(Debug)]
pub struct LayerNorm {
    // gamma: (C) f32, state-dict name `<prefix>.weight`
    pub gamma: Param,
    // beta: (C) f32, state-dict name `<prefix>.bias`
    pub beta: Param,
    pub eps: f32,
    // input: (B, C); its value is saved for backward
    input: Node,
    // output: (B, C) activation dtype
    output: Node,
    // mean, rstd: (B) f32, saved by forward for backward
    mean: Tensor,
    rstd: Tensor,
    // row_terms: (B, 2) f32 scratch of backward. Held so its buffer stays ours: a dropped
    // Tensor returns its buffer to the pool while the bind groups still use it.
    #[allow(dead_code)]
    row_terms: Tensor,
    forward: [Dispatch; 2],
    backward: Vec<Dispatch>,
}

impl LayerNorm {
    /// LayerNorm over the last dimension of `input`; parameters named `<prefix>.weight` and
    /// `<prefix>.bias`.
    // input: (B, C) activation dtype
    pub fn new(ctx: &LayerCtx<'_>, input: &Node, prefix: &str, eps: f32) -> Result<LayerNorm> {
        let gpu = ctx.gpu;
        let (b, c) = batch_width("layernorm", input)?;
        let gamma = Param::from_f32(
            gpu,
            &format!("{prefix}.weight"),
            &[c],
            &vec![1.0; c],
            DType::F32,
        )?;
        let beta = Param::from_f32(
            gpu,
            &format!("{prefix}.bias"),
            &[c],
            &vec![0.0; c],
            DType::F32,
        )?;
        let output = ctx.output_node(&[b, c])?;
        let mean = Tensor::empty(gpu, &[b], DType::F32)?;
        let rstd = Tensor::empty(gpu, &[b], DType::F32)?;
        let row_terms = Tensor::empty(gpu, &[b, 2], DType::F32)?;
        let stats = || Stats {
            mean: &mean,
            rstd: &rstd,
        };
        let forward = layernorm::forward(
            gpu,
            &input.value,
            &gamma.master,
            &beta.master,
            eps,
            stats(),
            &output.value,
            ctx.found_inf,
        )?;
        let dy = output_grad("layernorm", &output)?;
        let backward = layernorm::backward(
            gpu,
            &input.value,
            dy,
            &gamma.master,
            stats(),
            &row_terms,
            input.grad.as_ref(),
            &gamma.grad,
            &beta.grad,
            ctx.grad_mode.accumulate(),
            ctx.found_inf,
        )?;
        Ok(LayerNorm {
            gamma,
            beta,
            eps,
            input: input.clone(),
            output,
            mean,
            rstd,
            row_terms,
            forward,
            backward,
        })
    }

    pub fn input(&self) -> &Node {
        &self.input
    }

    /// The f32 row means saved by the last forward.
    // mean: (B) f32
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The f32 reciprocal standard deviations saved by the last forward.
    // rstd: (B) f32
    pub fn rstd(&self) -> &Tensor {
        &self.rstd
    }
}

impl Layer for LayerNorm {
    fn output(&self) -> &Node {
        &self.output
    }
    fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.forward {
            d.encode(pass);
        }
    }
    fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.backward {
            d.encode(pass);
        }
    }
    fn params(&self) -> Vec<&Param> {
        vec![&self.gamma, &self.beta]
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }
}
