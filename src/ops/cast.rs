//! Dtype casts between any two storage formats, on the GPU.

use crate::kernels::{declare_kernels, Access, Bind, Dispatch, Slot, SlotKind, ANY};
use crate::{Error, Gpu, Result, Tensor};

declare_kernels! {
    "cast";
    CAST = "cast", slots: &[Slot::read("x", ANY), Slot::write("y", ANY)], name: "cast";
    COPY_WORDS = "copy_words",
        slots: &[
            Slot::raw("x", SlotKind::U32x4, Access::Read),
            Slot::raw("y", SlotKind::U32x4, Access::ReadWrite),
        ];
}

const WG: u32 = 256;

/// Invocations of a 16-byte elementwise kernel over `n` elements: one an octet (eight
/// elements), the last one also taking the partial octet's pairs.
pub(crate) fn octets(n: usize) -> u64 {
    (n as u64).div_ceil(8)
}

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
    gpu.dispatch(
        &CAST,
        &[Bind::Tensor(x), Bind::Tensor(y)],
        bytemuck::bytes_of(&n),
        &[("WG", WG as u64)],
        gpu.grid_1d(octets(x.len()), WG),
    )
}

/// y = x as 16-byte words, `words` (1 to 8) an invocation: the copy ceiling of a kernel
/// with 16-byte accesses, for `halfgrad bench copy`. Both tensors must hold the same
/// number of bytes, a multiple of 16.
pub fn copy_words(gpu: &Gpu, x: &Tensor, y: &Tensor, words: u32) -> Result<Dispatch> {
    let bytes = x.buffer().size();
    if bytes != y.buffer().size() || !bytes.is_multiple_of(16) {
        return Err(Error::shape(
            "copy_words",
            format!("{bytes} bytes, a multiple of 16, in both"),
            format!("{} bytes", y.buffer().size()),
        ));
    }
    if !(1..=8).contains(&words) {
        return Err(Error::InvalidArgument(format!(
            "copy_words: {words} words an invocation (1 to 8)"
        )));
    }
    let n = u32::try_from(bytes / 16).map_err(|_| {
        Error::InvalidArgument(format!("copy_words: {bytes} bytes exceed u32 words"))
    })?;
    let invocations = (n as u64).div_ceil(words as u64);
    gpu.dispatch(
        &COPY_WORDS,
        &[Bind::Buffer(x.buffer()), Bind::Buffer(y.buffer())],
        bytemuck::bytes_of(&n),
        &[("WG", WG as u64), ("WORDS", words as u64)],
        gpu.grid_1d(invocations, WG),
    )
}

/// Casts into a new tensor and submits at once (convenience for tools and tests).
pub fn cast_to(gpu: &Gpu, x: &Tensor, dtype: crate::DType) -> Result<Tensor> {
    let y = Tensor::empty(gpu, x.shape(), dtype)?;
    gpu.run(&[&cast(gpu, x, &y)?])?;
    Ok(y)
}
