//! Operations: one module per kernel family. Each checks shapes and dtypes, computes the
//! grid, and returns a [`Dispatch`](crate::kernels::Dispatch) to encode into a step.

pub mod accumulate;
pub mod activation;
pub mod adam;
pub mod attention;
pub mod cast;
pub mod embedding;
pub mod layernorm;
pub mod loss_scale;
pub mod matmul;
pub mod reduce;
pub mod softmax_xent;

use crate::kernels::KernelDef;
use crate::{DType, Error, Result, Tensor};

/// Every kernel the library can launch, chained from each module's `KERNELS` (declared
/// with [`declare_kernels!`](crate::kernels::declare_kernels)). The GPU-free shader test
/// composes every variant of each, validates it with naga and translates it to SPIR-V,
/// MSL and HLSL.
pub fn all_kernels() -> Vec<&'static KernelDef> {
    let declared = [
        matmul::shader_matmul::KERNELS,
        matmul::shader_matmul_coop::KERNELS,
        matmul::shader_matmul_coop_direct::KERNELS,
        matmul::shader_matmul_coop_copied::KERNELS,
        matmul::rescale::shader_matmul_rescale::KERNELS,
        matmul::small::KERNELS,
        cast::KERNELS,
        activation::KERNELS,
        reduce::KERNELS,
        accumulate::KERNELS,
        layernorm::KERNELS,
        softmax_xent::KERNELS,
        loss_scale::KERNELS,
        adam::KERNELS,
        embedding::KERNELS,
        attention::KERNELS,
    ];
    declared.into_iter().flatten().copied().collect()
}

/// Checks an integer input (labels, token ids): a `DType::U32` tensor of `n` elements.
pub(crate) fn expect_u32(op: &'static str, what: &str, t: &Tensor, n: usize) -> Result<()> {
    if t.dtype() != DType::U32 {
        return Err(Error::DTypeMismatch {
            op,
            expected: "u32".into(),
            got: t.dtype(),
        });
    }
    if t.len() != n {
        return Err(Error::shape(
            op,
            format!("{what} of {n} u32 elements"),
            format!("{:?}", t.shape()),
        ));
    }
    Ok(())
}
