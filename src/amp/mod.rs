//! Precision policy and loss scaling: which dtype each op reads, computes in and writes;
//! the found-inf flag that 16-bit stores raise on overflow.

use crate::{DType, Error, Result};

/// Training precision mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    F16,
    BF16,
}

impl Precision {
    /// The dtype of activations and of the low-precision weight copy.
    pub fn compute_dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::BF16 => DType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        self.compute_dtype().name()
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.parse::<DType>()? {
            DType::F32 => Precision::F32,
            DType::F16 => Precision::F16,
            DType::BF16 => Precision::BF16,
            DType::U32 => {
                return Err(Error::InvalidArgument(
                    "u32 is not a training precision (expected f32, f16 or bf16)".into(),
                ))
            }
        })
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub mod policy;
pub mod scaler;

pub use crate::flag::OverflowFlag;
pub use policy::{constant_scale, LossScaling, OpClass, OpPrecision, Policy};
pub use scaler::{LossScaler, OptimStats, ScalerConfig};
