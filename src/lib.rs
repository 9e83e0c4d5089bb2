//! halfgrad: mixed-precision (FP16 / BF16) neural-network training on WebGPU.
//!
//! Forward and backward matrix products read 16-bit operands and accumulate in f32; master
//! weights, Adam moments, softmax, layer-norm statistics, losses and sums stay in f32.
//! The same code runs on Vulkan, Metal, DX12 and in the browser. See docs/ARCHITECTURE.md.

// On wasm32 wgpu's handles are neither Send nor Sync (the page is single-threaded); the
// shared `Arc`s stay so native and web run one code path.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

pub mod dtype;
pub mod error;
pub mod flag;
pub mod gpu;
pub mod kernels;
pub mod layout;
pub mod ops;
pub mod tensor;

pub use dtype::DType;
pub use error::{CsvProblem, Error, Result};
pub use gpu::{AdapterFacts, Capabilities, Gpu, GpuOptions};
pub use tensor::Tensor;
pub mod amp;
pub mod checkpoint;
pub mod data;
pub mod nn;
pub mod optim;
pub mod selfcheck;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;
