//! Optimizers: fused AdamW on f32 master weights, driven by the GPU-resident loss scaler.

pub mod adamw;

pub use crate::amp::OptimStats;
pub use crate::checkpoint::{StateData, StateTensor};
pub use adamw::{AdamConfig, AdamW};
