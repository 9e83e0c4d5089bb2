//! Optimizers: fused AdamW on f32 master weights, driven by the GPU-resident loss scaler.

pub mod adamw;
pub mod state;

pub use crate::amp::OptimStats;
pub use adamw::{AdamConfig, AdamW};
pub use state::{StateData, StateTensor};
