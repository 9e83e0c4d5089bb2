//! The mixed-precision policy: for each training mode, which dtype every class of op
//! reads, computes in and writes.
//!
//! Follows PyTorch autocast: matrix products read 16-bit operands and accumulate in f32;
//! softmax, log-softmax, layer-norm statistics, losses and every reduction run in f32
//! (autocast's fp32 list); activations between layers are stored in the 16-bit dtype.
//! Parameters keep an f32 master copy; the 16-bit copy that matrix products read is
//! written by the optimizer step, never accumulated into; parameter gradients are f32.
//! A residual stream (the GPT's) and its gradient stay f32, as under autocast a 16-bit
//! output added to an f32 tensor gives f32 (`nn::gpt::residual`).

use super::Precision;
use crate::{DType, Gpu, Result};
use std::fmt;

/// A class of operation, for [`Policy::op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// Matrix products (Linear forward, input and weight gradients).
    Matmul,
    /// Elementwise activations (GELU, ReLU) and their backward.
    Elementwise,
    /// Layer norm: statistics in f32, normalised output in the activation dtype.
    LayerNorm,
    /// Softmax / log-softmax / cross-entropy loss.
    SoftmaxLoss,
    /// Sums over a dimension (bias gradients, loss means).
    Reduction,
}

/// The dtypes one op class reads, computes in and writes under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpPrecision {
    /// Storage dtype of the op's activation inputs (and of weights read by matmuls).
    pub reads: DType,
    /// Arithmetic / accumulation dtype inside the kernel.
    pub computes: DType,
    /// Storage dtype of the op's main output.
    pub writes: DType,
}

/// Loss scaling under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossScaling {
    /// The loss is not scaled (the scale buffer holds 1.0).
    Off,
    /// Dynamic loss scaling (PyTorch GradScaler semantics).
    Dynamic,
}

/// Which dtype each op reads, computes in and writes, for one training mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    pub precision: Precision,
    /// Operands of matrix products (activations and the weight copy they read).
    pub matmul_operand: DType,
    /// Accumulator of matrix products: always f32.
    pub matmul_accumulate: DType,
    /// Activations stored between layers, and their gradients.
    pub activation: DType,
    /// Softmax, log-softmax, layer-norm statistics, losses and reductions: always f32.
    pub reduction: DType,
    /// Master weights (what the optimizer updates and checkpoints store): always f32.
    pub master: DType,
    /// Parameter gradients: always f32.
    pub grad: DType,
    pub loss_scaling: LossScaling,
}

impl Policy {
    /// The default policy of a mode: dynamic loss scaling for F16 only (BF16 has f32's
    /// exponent range and needs none; it may be turned on with [`Policy::with_loss_scaling`]).
    pub fn new(precision: Precision) -> Policy {
        let low = precision.compute_dtype();
        Policy {
            precision,
            matmul_operand: low,
            matmul_accumulate: DType::F32,
            activation: low,
            reduction: DType::F32,
            master: DType::F32,
            grad: DType::F32,
            loss_scaling: if precision == Precision::F16 {
                LossScaling::Dynamic
            } else {
                LossScaling::Off
            },
        }
    }

    /// The same policy with dynamic loss scaling switched on or off. F32 ignores `on`:
    /// f32 gradients do not underflow the way 16-bit ones do.
    pub fn with_loss_scaling(mut self, on: bool) -> Policy {
        self.loss_scaling = if on && self.precision != Precision::F32 {
            LossScaling::Dynamic
        } else {
            LossScaling::Off
        };
        self
    }

    /// Whether the low-precision weight copy exists (F16 / BF16 modes).
    pub fn has_low_copy(&self) -> bool {
        self.matmul_operand != self.master
    }

    /// The dtypes an op class reads, computes in and writes.
    pub fn op(&self, class: OpClass) -> OpPrecision {
        let a = self.activation;
        match class {
            OpClass::Matmul => OpPrecision {
                reads: self.matmul_operand,
                computes: self.matmul_accumulate,
                writes: a,
            },
            OpClass::Elementwise | OpClass::LayerNorm => OpPrecision {
                reads: a,
                computes: DType::F32,
                writes: a,
            },
            // The loss reads (possibly 16-bit) logits and writes an f32 loss; the logits'
            // gradient it produces is stored in the activation dtype.
            OpClass::SoftmaxLoss | OpClass::Reduction => OpPrecision {
                reads: a,
                computes: self.reduction,
                writes: self.reduction,
            },
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Precision::F32)
    }
}

impl From<Precision> for Policy {
    fn from(p: Precision) -> Policy {
        Policy::new(p)
    }
}

impl fmt::Display for Policy {
    /// One line, e.g. `f16: matmul f16xf16->f32 acc, activations f16, norms/softmax/loss
    /// f32, master weights f32, grads f32, loss scaling dynamic`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.matmul_operand;
        write!(
            f,
            "{}: matmul {op}x{op}->{} acc, activations {}, norms/softmax/loss {}, \
             master weights {}, grads {}, loss scaling {}",
            self.precision,
            self.matmul_accumulate,
            self.activation,
            self.reduction,
            self.master,
            self.grad,
            match self.loss_scaling {
                LossScaling::Off => "off",
                LossScaling::Dynamic => "dynamic",
            }
        )
    }
}

/// A small storage buffer holding one f32 `value` (padded to 16 bytes): the loss-scale
/// binding that the cross-entropy backward reads when no loss scaler is in use (1.0),
/// or a fixed scale in tests.
pub fn constant_scale(gpu: &Gpu, value: f32) -> Result<wgpu::Buffer> {
    use wgpu::util::DeviceExt;
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&value.to_le_bytes());
    gpu.scoped("allocating a constant loss scale", || {
        gpu.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("halfgrad constant loss scale"),
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_itself_in_one_line() {
        assert_eq!(
            Policy::new(Precision::F16).to_string(),
            "f16: matmul f16xf16->f32 acc, activations f16, norms/softmax/loss f32, \
             master weights f32, grads f32, loss scaling dynamic"
        );
        assert_eq!(
            Policy::new(Precision::BF16).to_string(),
            "bf16: matmul bf16xbf16->f32 acc, activations bf16, norms/softmax/loss f32, \
             master weights f32, grads f32, loss scaling off"
        );
        assert!(Policy::new(Precision::F32)
            .to_string()
            .starts_with("f32: matmul f32xf32->f32"));
        assert_eq!(
            Policy::new(Precision::BF16)
                .with_loss_scaling(true)
                .loss_scaling,
            LossScaling::Dynamic
        );
    }

    #[test]
    fn reductions_are_f32_in_every_mode() {
        for p in [Precision::F32, Precision::F16, Precision::BF16] {
            let pol = Policy::new(p);
            for c in [OpClass::LayerNorm, OpClass::SoftmaxLoss, OpClass::Reduction] {
                assert_eq!(pol.op(c).computes, DType::F32);
            }
            assert_eq!(pol.op(OpClass::Matmul).computes, DType::F32);
            assert_eq!(pol.op(OpClass::Matmul).reads, p.compute_dtype());
            assert_eq!(pol.grad, DType::F32);
        }
    }
}
