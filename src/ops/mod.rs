//! Operations: one module per kernel family. Each checks shapes and dtypes, computes the
//! grid, and returns a [`Dispatch`](crate::kernels::Dispatch) to encode into a step.

pub mod adam;
pub mod cast;
pub mod loss_scale;
pub mod matmul;

use crate::kernels::KernelDef;

/// Every kernel the library can launch. The GPU-free shader test composes every variant
/// of each, validates it with naga and translates it to SPIR-V, MSL and HLSL.
pub fn all_kernels() -> Vec<&'static KernelDef> {
    vec![
        &cast::CAST,
        &matmul::TILED,
        &matmul::COOP,
        &loss_scale::CHECK,
        &loss_scale::UPDATE,
        &adam::FINALIZE,
        &adam::ADAMW,
        &adam::ADAMW_LOW,
    ]
}
