//! A trainable parameter: f32 master copy, optional low-precision copy for matrix
//! products, and its f32 gradient. The optimizer owns the Adam moments.

use crate::{DType, Gpu, Result, Tensor};

#[derive(Debug, Clone)]
pub struct Param {
    /// PyTorch state-dict name of the equivalent `nn.Sequential` model (`0.weight`, ...).
    pub name: String,
    /// f32 master weights: what the optimizer updates and checkpoints store.
    pub master: Tensor,
    /// f16 / bf16 copy read by matrix products in F16 / BF16 mode; written only by the
    /// optimizer step (never accumulated into). `None` when compute reads the master.
    pub low: Option<Tensor>,
    /// f32 gradient, same shape. Overwritten by each backward (or added into under
    /// `GradMode::Accumulate`, when the optimizer clears it after the step).
    pub grad: Tensor,
}

impl Param {
    /// A parameter initialised from host values; `low` is a rounded copy when
    /// `compute` is a 16-bit dtype.
    pub fn from_f32(
        gpu: &Gpu,
        name: &str,
        shape: &[usize],
        values: &[f32],
        compute: DType,
    ) -> Result<Param> {
        let master = Tensor::from_f32(gpu, shape, values, DType::F32)?;
        let low = match compute {
            DType::F32 => None,
            d => Some(Tensor::from_f32(gpu, shape, values, d)?),
        };
        let grad = Tensor::zeros(gpu, shape, DType::F32)?;
        Ok(Param {
            name: name.to_string(),
            master,
            low,
            grad,
        })
    }

    /// Overwrites the master weights from host values, and the low-precision copy with
    /// the same values rounded to its dtype (queued; ordered before the next submission).
    pub fn write_f32(&self, values: &[f32]) -> Result<()> {
        self.master.write_f32(values)?;
        if let Some(low) = &self.low {
            low.write_f32(values)?;
        }
        Ok(())
    }

    /// The tensor matrix products read: the low-precision copy, or the master in F32 mode.
    pub fn compute(&self) -> &Tensor {
        self.low.as_ref().unwrap_or(&self.master)
    }

    pub fn shape(&self) -> &[usize] {
        self.master.shape()
    }

    pub fn len(&self) -> usize {
        self.master.len()
    }

    pub fn is_empty(&self) -> bool {
        self.master.is_empty()
    }
}
