//! GELU / ReLU: [`activation`] is the graph op (no parameters; saves its input),
//! [`ActivationLayer`] the same op as a standalone layer.

use super::graph::{Backward, Graph, GraphBuilder, Op, ParamStore, ValueId};
use super::{batch_width, one_op_graph, Layer, LayerCtx, Node, Param};
use crate::kernels::Dispatch;
use crate::ops::activation::{self, Activation};
use crate::{Result, Tensor};

/// The graph op of an elementwise activation.
#[derive(Debug)]
struct ActivationOp {
    kind: Activation,
    // x: (B, C), saved for backward
    x: ValueId,
    x_value: Tensor,
    // y: (B, C) activation dtype
    y: ValueId,
    forward: [Dispatch; 1],
}

/// y = act(x) elementwise, in the activation dtype.
// x: (B, C) -> y: (B, C) activation dtype
pub fn activation(g: &mut GraphBuilder<'_>, x: ValueId, kind: Activation) -> Result<ValueId> {
    let x_value = g.value(x).clone();
    let y = g.output(x_value.shape(), g.ctx().policy.activation, g.needs_grad(x))?;
    let forward = activation::forward(g.gpu(), kind, &x_value, g.value(y), g.ctx().found_inf)?;
    g.push(ActivationOp {
        kind,
        x,
        x_value,
        y,
        forward: [forward],
    });
    Ok(y)
}

impl Op for ActivationOp {
    fn forward(&self) -> &[Dispatch] {
        &self.forward
    }

    fn backward(&self, b: &mut Backward<'_>) -> Result<()> {
        let Some(dy) = b.grad(self.y).cloned() else {
            return Ok(());
        };
        // dx = dy * act'(x): the kernel overwrites only
        if let Some(dx) = b.value_grad(self.x, false)? {
            let found_inf = b.ctx().found_inf;
            let d = activation::backward(
                b.gpu(),
                self.kind,
                &self.x_value,
                &dy,
                &dx.tensor,
                found_inf,
            )?;
            b.push(d);
            b.commit(dx)?;
        }
        Ok(())
    }
}

/// An elementwise activation layer (`Activation::Gelu` or `Activation::Relu`).
#[derive(Debug)]
pub struct ActivationLayer {
    pub kind: Activation,
    // input: (B, C); its value is saved for backward
    input: Node,
    // output: (B, C) activation dtype
    output: Node,
    graph: Graph,
}

impl ActivationLayer {
    /// y = act(x) over the input node.
    // input: (B, C) activation dtype
    pub fn new(ctx: &LayerCtx<'_>, input: &Node, kind: Activation) -> Result<ActivationLayer> {
        batch_width("activation", input)?;
        let store = ParamStore::new();
        let (graph, output) = one_op_graph(ctx, &store, input, |g, x| activation(g, x, kind))?;
        Ok(ActivationLayer {
            kind,
            input: input.clone(),
            output,
            graph,
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
        self.graph.encode_forward(pass);
    }
    fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.graph.encode_backward(pass);
    }
    fn params(&self) -> Vec<&Param> {
        Vec::new()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        Vec::new()
    }
}
