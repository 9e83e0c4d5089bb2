//! Loss scaling: the dynamic loss scaler and the optimizer's step statistics. The
//! precision policy ([`crate::precision`]) and the found-inf flag ([`crate::flag`]) sit
//! below the layers that use them; they are re-exported here under their old paths.

pub mod scaler;

pub use crate::flag::OverflowFlag;
pub use crate::precision::{constant_scale, LossScaling, OpClass, OpPrecision, Policy, Precision};
/// The precision policy under its old path (`amp::policy`).
pub mod policy {
    pub use crate::precision::{constant_scale, LossScaling, OpClass, OpPrecision, Policy};
}
pub use scaler::{LossScaler, OptimStats, ScalerConfig};
