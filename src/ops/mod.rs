//! Operations: one module per kernel family. Each checks shapes and dtypes, computes the
//! grid, and returns a [`Dispatch`](crate::kernels::Dispatch) to encode into a step.

pub mod cast;
