//! GELU / ReLU as a layer: no parameters; saves its input (the previous layer's output).

use super::{batch_width, Layer, LayerCtx, Node, Param};
use crate::kernels::Dispatch;
use crate::ops::activation::{self, Activation};
use crate::Result;

/// An elementwise activation layer (`Activation::Gelu` or `Activation::Relu`).
#[derive(Debug)]
pub struct ActivationLayer {
    pub kind: Activation,
    // input: (B, C); its value is saved for backward
    input: Node,
    // output: (B, C) activation dtype
    output: Node,
    forward: Dispatch,
    backward: Option<Dispatch>,
}

impl ActivationLayer {
    /// y = act(x) over the input node.
    // input: (B, C) activation dtype
    pub fn new(ctx: &LayerCtx<'_>, input: &Node, kind: Activation) -> Result<ActivationLayer> {
        let (b, c) = batch_width("activation", input)?;
        let output = ctx.output_node(&[b, c])?;
        let forward =
            activation::forward(ctx.gpu, kind, &input.value, &output.value, ctx.found_inf)?;
        let backward = match (&input.grad, &output.grad) {
            (Some(dx), Some(dy)) => Some(activation::backward(
                ctx.gpu,
                kind,
                &input.value,
                dy,
                dx,
                ctx.found_inf,
            )?),
            _ => None,
        };
        Ok(ActivationLayer {
            kind,
            input: input.clone(),
            output,
            forward,
            backward,
        })
    }

    /// A GELU layer (tanh approximation).
    // input: (B, C) activation dtype
    pub fn gelu(ctx: &LayerCtx<'_>, input: &Node) -> Result<ActivationLayer> {
        ActivationLayer::new(ctx, input, Activation::Gelu)
    }

    /// A ReLU layer.
    // input: (B, C) activation dtype
    pub fn relu(ctx: &LayerCtx<'_>, input: &Node) -> Result<ActivationLayer> {
        ActivationLayer::new(ctx, input, Activation::Relu)
    }

    pub fn input(&self) -> &Node {
        &self.input
    }
}

impl Layer for ActivationLayer {
    fn output(&self) -> &Node {
        &self.output
    }
    fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.forward.encode(pass);
    }
    fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(d) = &self.backward {
            d.encode(pass);
        }
    }
    fn params(&self) -> Vec<&Param> {
        Vec::new()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        Vec::new()
    }
}
