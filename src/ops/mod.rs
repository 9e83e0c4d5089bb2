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

/// Every kernel the library can launch. The GPU-free shader test composes every variant
/// of each, validates it with naga and translates it to SPIR-V, MSL and HLSL.
pub fn all_kernels() -> Vec<&'static KernelDef> {
    vec![
        &cast::CAST,
        &matmul::TILED,
        &matmul::COOP,
        &matmul::COOP_TILE,
        &activation::GELU_FORWARD,
        &activation::GELU_BACKWARD,
        &activation::RELU_FORWARD,
        &activation::RELU_BACKWARD,
        &reduce::COL_SUM,
        &accumulate::ADD_INTO,
        &layernorm::FORWARD_STATS,
        &layernorm::FORWARD_APPLY,
        &layernorm::BACKWARD_ROWS,
        &layernorm::BACKWARD_INPUT,
        &layernorm::BACKWARD_PARAMS,
        &softmax_xent::FORWARD_ROWS,
        &softmax_xent::FORWARD_MEAN,
        &softmax_xent::BACKWARD,
        &loss_scale::CHECK,
        &loss_scale::UPDATE,
        &adam::FINALIZE,
        &adam::ADAMW,
        &adam::ADAMW_LOW,
        &embedding::FORWARD,
        &embedding::BACKWARD_TOKENS,
        &embedding::BACKWARD_POSITIONS,
        &attention::SOFTMAX_FORWARD,
        &attention::SOFTMAX_BACKWARD,
    ]
}
