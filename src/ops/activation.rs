//! Elementwise activations (GELU tanh approximation, ReLU): forward and backward.

use crate::flag::OverflowFlag;
use crate::kernels::{declare_kernels, Access, Bind, Dispatch, KernelDef, Slot, SlotKind, ANY};
use crate::{Error, Gpu, Result, Tensor};

const FOUND_INF: Slot = Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite);
const FORWARD_SLOTS: &[Slot] = &[Slot::read("x", ANY), Slot::write("y", ANY), FOUND_INF];
const BACKWARD_SLOTS: &[Slot] = &[
    Slot::read("x", ANY),
    Slot::read("dy", ANY),
    Slot::write("dx", ANY),
    FOUND_INF,
];

declare_kernels! {
    "activation";
    GELU_FORWARD = "gelu_forward", slots: FORWARD_SLOTS;
    GELU_BACKWARD = "gelu_backward", slots: BACKWARD_SLOTS;
    RELU_FORWARD = "relu_forward", slots: FORWARD_SLOTS;
    RELU_BACKWARD = "relu_backward", slots: BACKWARD_SLOTS;
}

/// Which elementwise nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// GELU, tanh approximation (GPT-2's `gelu_new`, PyTorch `approximate="tanh"`).
    Gelu,
    /// max(x, 0).
    Relu,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::Relu => "relu",
        }
    }

    fn kernels(self) -> (&'static KernelDef, &'static KernelDef) {
        match self {
            Activation::Gelu => (&GELU_FORWARD, &GELU_BACKWARD),
            Activation::Relu => (&RELU_FORWARD, &RELU_BACKWARD),
        }
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            other => Err(Error::InvalidArgument(format!(
                "unknown activation `{other}` (expected gelu or relu)"
            ))),
        }
    }
}

const WG: u32 = 256;

fn same_len(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            op,
            format!("{:?}", a.shape()),
            format!("{:?}", b.shape()),
        ));
    }
    Ok(())
}

fn launch(gpu: &Gpu, def: &'static KernelDef, binds: &[Bind<'_>], n: usize) -> Result<Dispatch> {
    let n32 = u32::try_from(n)
        .map_err(|_| Error::InvalidArgument(format!("{}: {n} elements exceed u32", def.name)))?;
    gpu.dispatch(
        def,
        binds,
        bytemuck::bytes_of(&n32),
        &[("WG", WG as u64)],
        gpu.grid_1d(crate::ops::cast::octets(n), WG),
    )
}

/// y = act(x).
// x: (B, C) any dtype
// y: (B, C) any dtype
// found_inf: raised when a 16-bit store of y overflows
pub fn forward(
    gpu: &Gpu,
    act: Activation,
    x: &Tensor,
    y: &Tensor,
    found_inf: &OverflowFlag,
) -> Result<Dispatch> {
    same_len("activation forward", x, y)?;
    launch(
        gpu,
        act.kernels().0,
        &[
            Bind::Tensor(x),
            Bind::Tensor(y),
            Bind::Buffer(found_inf.buffer()),
        ],
        x.len(),
    )
}

/// dx = dy * act'(x) (overwrites dx).
// x: (B, C) any dtype, the forward input
// dy: (B, C) any dtype
// dx: (B, C) any dtype
// found_inf: raised when a 16-bit store of dx overflows
pub fn backward(
    gpu: &Gpu,
    act: Activation,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    found_inf: &OverflowFlag,
) -> Result<Dispatch> {
    same_len("activation backward", x, dy)?;
    same_len("activation backward", x, dx)?;
    launch(
        gpu,
        act.kernels().1,
        &[
            Bind::Tensor(x),
            Bind::Tensor(dy),
            Bind::Tensor(dx),
            Bind::Buffer(found_inf.buffer()),
        ],
        x.len(),
    )
}
