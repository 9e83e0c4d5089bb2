//! Linear layer y = x W^T + b: 16-bit operands with f32 accumulation in F16 / BF16 mode,
//! f32 weight and bias gradients.

use super::init::{linear_bound, uniform_vec, SplitMix64};
use super::{batch_width, output_grad, Layer, LayerCtx, Node, Param};
use crate::kernels::Dispatch;
use crate::ops::matmul::{matmul, MatmulOptions};
use crate::ops::reduce::col_sum;
use crate::{DType, Error, Result, Tensor};

#[derive(Debug)]
pub struct Linear {
    // weight: (out, in); master f32, low copy in the matmul operand dtype; name `<p>.weight`
    pub weight: Param,
    // bias: (out) f32 (matmuls add an f32 bias to the f32 accumulator); name `<p>.bias`
    pub bias: Option<Param>,
    // input: (B, in); its value is saved for the weight gradient
    input: Node,
    // output: (B, out) activation dtype
    output: Node,
    forward: Dispatch,
    backward: Vec<Dispatch>,
}

impl Linear {
    /// A linear layer over `input`, initialised like PyTorch `nn.Linear`: weight and bias
    /// uniform in ±1/sqrt(in) drawn from `rng` (weight first, row-major, then bias).
    /// Parameters are named `<prefix>.weight` and `<prefix>.bias`.
    // input: (B, in) activation dtype
    pub fn new(
        ctx: &LayerCtx<'_>,
        input: &Node,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut SplitMix64,
    ) -> Result<Linear> {
        let gpu = ctx.gpu;
        let (b, width) = batch_width("linear", input)?;
        if width != in_features {
            return Err(Error::shape(
                "linear input",
                format!("[{b}, {in_features}]"),
                format!("{:?}", input.shape()),
            ));
        }
        if out_features == 0 {
            return Err(Error::Empty {
                what: "linear output",
                shape: vec![b, 0],
            });
        }
        // Refuse an impossible weight before building its initial values on the host.
        Tensor::check_size(gpu, &[out_features, in_features], DType::F32)?;
        let bound = linear_bound(in_features);
        let w_init = uniform_vec(rng, out_features * in_features, bound);
        let weight = Param::from_f32(
            gpu,
            &format!("{prefix}.weight"),
            &[out_features, in_features],
            &w_init,
            ctx.policy.matmul_operand,
        )?;
        let bias = if bias {
            let b_init = uniform_vec(rng, out_features, bound);
            Some(Param::from_f32(
                gpu,
                &format!("{prefix}.bias"),
                &[out_features],
                &b_init,
                DType::F32,
            )?)
        } else {
            None
        };
        let output = ctx.output_node(&[b, out_features])?;
        let w = weight.compute();

        // y (B, out) = x (B, in) @ W^T (in, out) + b
        let forward = matmul(
            gpu,
            &input.value,
            w,
            &output.value,
            bias.as_ref().map(|p| &p.master),
            Some(ctx.found_inf),
            &MatmulOptions {
                trans_b: true,
                ..Default::default()
            },
        )?;

        let dy = output_grad("linear", &output)?;
        let accumulate = ctx.grad_mode.accumulate();
        let mut backward = Vec::with_capacity(3);
        // dW (out, in) = dy^T (out, B) @ x (B, in), f32
        backward.push(matmul(
            gpu,
            dy,
            &input.value,
            &weight.grad,
            None,
            None,
            &MatmulOptions {
                trans_a: true,
                accumulate,
                ..Default::default()
            },
        )?);
        // db (out) = sum over the batch of dy, f32
        if let Some(p) = &bias {
            backward.push(col_sum(gpu, dy, &p.grad, accumulate)?);
        }
        // dx (B, in) = dy (B, out) @ W (out, in), activation dtype
        if let Some(dx) = &input.grad {
            backward.push(matmul(
                gpu,
                dy,
                w,
                dx,
                None,
                Some(ctx.found_inf),
                &MatmulOptions::default(),
            )?);
        }
        Ok(Linear {
            weight,
            bias,
            input: input.clone(),
            output,
            forward,
            backward,
        })
    }

    pub fn input(&self) -> &Node {
        &self.input
    }
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Layer for Linear {
    fn output(&self) -> &Node {
        &self.output
    }
    fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.forward.encode(pass);
    }
    fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.backward {
            d.encode(pass);
        }
    }
    fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.weight)
            .chain(self.bias.as_ref())
            .collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.weight)
            .chain(self.bias.as_mut())
            .collect()
    }
}
