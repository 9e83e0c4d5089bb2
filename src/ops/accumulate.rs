//! In-place addition `y += x`: the static graph's fallback for a backward kernel that
//! cannot accumulate into a gradient another op already wrote (see `nn::graph`).

use crate::flag::OverflowFlag;
use crate::kernels::{declare_kernels, Access, Bind, Dispatch, Slot, SlotKind, ANY};
use crate::{Error, Gpu, Result, Tensor};

declare_kernels! {
    "accumulate";
    /// y += x elementwise (any dtypes), summed in f32.
    ADD_INTO = "add_into",
        slots: &[
            Slot::read("x", ANY),
            Slot::write("y", ANY),
            Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
        ];
}

const WG: u32 = 256;

/// y += x elementwise, summed in f32 and stored in y's dtype.
// x: any shape, any dtype
// y: x's shape, any dtype (read and overwritten)
// found_inf: raised when a 16-bit store of y overflows
pub fn add_into(gpu: &Gpu, x: &Tensor, y: &Tensor, found_inf: &OverflowFlag) -> Result<Dispatch> {
    if x.shape() != y.shape() {
        return Err(Error::shape(
            "add_into",
            format!("{:?}", y.shape()),
            format!("{:?}", x.shape()),
        ));
    }
    let n = x.len();
    let n32 = u32::try_from(n)
        .map_err(|_| Error::InvalidArgument(format!("add_into: {n} elements exceed u32")))?;
    gpu.dispatch(
        &ADD_INTO,
        &[
            Bind::Tensor(x),
            Bind::Tensor(y),
            Bind::Buffer(found_inf.buffer()),
        ],
        bytemuck::bytes_of(&n32),
        &[("WG", WG as u64)],
        gpu.grid_1d(crate::ops::cast::octets(n), WG),
    )
}
