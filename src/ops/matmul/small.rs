//! The product kernel for software adapters (`shaders/matmul_small.wgsl`): each
//! invocation an 8 x 8 register block of C from 16-byte loads straight from storage, no
//! workgroup memory, no barriers. A CPU driver turns every load instruction into a loop
//! over the SIMD lanes, so the count of loads per FMA sets its speed, and the tiled
//! kernels' scalar workgroup-memory reads and staging cost far more there than on a GPU.

use super::plan::{kernel_from_env, MatmulKernel, MatmulOptions, PlanShape};
use super::tiled::TiledTile;
use crate::kernels::{Access, KernelDef, Slot, SlotKind, ANY};
use crate::{DType, Error, Gpu, Result};

/// The head of `shaders/matmul.wgsl` (Params, batches, fetches, output words) composes
/// before the kernel's own section.
const SOURCE: &str = concat!(
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/matmul.wgsl")),
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/shaders/matmul_small.wgsl"
    )),
);

/// The register-blocked kernel for software adapters: A and B as 16-byte words (their
/// dtypes are pipeline constants), C in any dtype.
pub static SMALL: KernelDef = KernelDef::new(
    "matmul_small/small",
    SOURCE,
    "small",
    &[
        Slot::raw("a", SlotKind::U32x4, Access::Read),
        Slot::raw("b", SlotKind::U32x4, Access::Read),
        Slot::write("c", ANY),
        Slot::raw("bias", SlotKind::F32, Access::Read),
        Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
    ],
);

/// Every kernel of this module (chained by `ops::all_kernels`).
pub static KERNELS: &[&KernelDef] = &[&SMALL];

/// Rows of C per invocation and per workgroup (fixed in the shader).
const SMALL_ROWS: u32 = 8;
/// Columns of C per invocation (fixed in the shader).
const SMALL_COLS: u32 = 8;
/// K, stored columns, offsets, leading dimensions and batch strides are multiples of
/// this many elements: every 16-byte word the kernel reads lies inside one stored row.
const SMALL_ALIGN: usize = 8;
/// The most invocations of a workgroup (all along N).
const SMALL_MAX_WG: u32 = 64;

/// A launch of the small kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmallConfig {
    /// Invocations per workgroup, along N (a power of two up to 64).
    pub sn: u32,
    /// The dtypes of A and B (the shader reads raw words).
    pub a_dtype: DType,
    pub b_dtype: DType,
}

impl SmallConfig {
    /// The launch for an output of N columns: enough invocations to cover N, at most 64.
    pub fn new(n: usize, (a_dtype, b_dtype): (DType, DType)) -> SmallConfig {
        let blocks = n.div_ceil(SMALL_COLS as usize).max(1) as u32;
        SmallConfig {
            sn: blocks.next_power_of_two().min(SMALL_MAX_WG),
            a_dtype,
            b_dtype,
        }
    }

    /// Rows and columns of C per workgroup.
    pub fn output_tile(&self) -> (u32, u32) {
        (SMALL_ROWS, SMALL_COLS * self.sn)
    }

    /// The pipeline constants of this launch.
    pub(super) fn overrides(&self) -> Vec<(&'static str, u64)> {
        let code = |d: DType| match d {
            DType::F16 => 1,
            DType::BF16 => 2,
            _ => 0,
        };
        vec![
            ("SN", self.sn as u64),
            ("A_DT", code(self.a_dtype)),
            ("B_DT", code(self.b_dtype)),
        ]
    }
}

/// The small kernel's launch for this product, or None where a tiled kernel runs it.
/// `TiledTile::SmallKernel` (or `HALFGRAD_TILED=small_kernel` under `Auto`) forces it
/// (`Error::InvalidArgument` for a product it cannot run); `Auto` takes it on software
/// adapters for products it can run unless the options or `HALFGRAD_MATMUL` force the
/// tiled kernel. It runs products whose C it can write (even N or an f32 C) and whose
/// operands are read in whole 16-byte words ([`SMALL_ALIGN`]).
pub(super) fn choose(
    gpu: &Gpu,
    dtypes: (DType, DType),
    shape: &PlanShape,
    opts: &MatmulOptions,
    tile: TiledTile,
) -> Result<Option<SmallConfig>> {
    let forced = match tile {
        TiledTile::SmallKernel => true,
        TiledTile::Auto => match super::tiled::tile_from_env()? {
            Some(TiledTile::SmallKernel) => true,
            Some(_) => return Ok(None),
            None => false,
        },
        _ => return Ok(None),
    };
    let float = |d: DType| matches!(d, DType::F32 | DType::F16 | DType::BF16);
    let fits = shape.fast_tiled
        && shape.aligned8
        && shape.stored_cols_8
        && shape.k.is_multiple_of(SMALL_ALIGN)
        && float(dtypes.0)
        && float(dtypes.1);
    if forced {
        if !fits {
            return Err(Error::InvalidArgument(format!(
                "matmul: the small kernel needs even N or an f32 C, and K, the operands' stored columns, offsets, leading dimensions and batch strides multiples of {SMALL_ALIGN} ({} x {} x {})",
                shape.m, shape.n, shape.k
            )));
        }
        return Ok(Some(SmallConfig::new(shape.n, dtypes)));
    }
    let software = gpu.adapter().device_type == "Cpu";
    let auto = opts.kernel != MatmulKernel::Tiled && kernel_from_env()? != MatmulKernel::Tiled;
    Ok((software && fits && auto).then(|| SmallConfig::new(shape.n, dtypes)))
}
