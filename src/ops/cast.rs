//! Dtype casts between any two storage formats, on the GPU.

use crate::kernels::{declare_kernels, Bind, Dispatch, Slot, ANY};
use crate::{Error, Gpu, Result, Tensor};

declare_kernels! {
    "cast";
    CAST = "cast", slots: &[Slot::read("x", ANY), Slot::write("y", ANY)], name: "cast";
}

const WG: u32 = 256;

/// y = x converted to y's dtype. x and y must have the same number of elements.
pub fn cast(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    if x.len() != y.len() {
        return Err(Error::shape(
            "cast",
            format!("{} elements", x.len()),
            format!("{} elements", y.len()),
        ));
    }
    let n = x.len() as u32;
    let pairs = (x.len() as u64).div_ceil(2);
    gpu.dispatch(
        &CAST,
        &[Bind::Tensor(x), Bind::Tensor(y)],
        bytemuck::bytes_of(&n),
        &[("WG", WG as u64)],
        gpu.grid_1d(pairs, WG),
    )
}

/// Casts into a new tensor and submits at once (convenience for tools and tests).
pub fn cast_to(gpu: &Gpu, x: &Tensor, dtype: crate::DType) -> Result<Tensor> {
    let y = Tensor::empty(gpu, x.shape(), dtype)?;
    gpu.run(&[&cast(gpu, x, &y)?])?;
    Ok(y)
}
