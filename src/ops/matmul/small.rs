//! The product kernel for software adapters (`shaders/matmul_small.wgsl`): each
//! invocation an 8 x 4 register block of C read straight from storage, no workgroup
//! memory, no barriers. A CPU driver runs a workgroup as a loop over its invocations that
//! every barrier splits, so the tiled kernels' staging costs far more there than on a GPU
//! and a 64-row batch wastes most of their tiles.

use super::plan::{kernel_from_env, MatmulKernel, MatmulOptions};
use super::tiled::TiledTile;
use crate::kernels::{KernelDef, ANY};
use crate::{Error, Gpu, Result};

/// The head of `shaders/matmul.wgsl` (Params, batches, fetches, output words) composes
/// before the kernel's own section.
const SOURCE: &str = concat!(
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/matmul.wgsl")),
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/matmul_small.wgsl")),
);

/// The register-blocked kernel for software adapters (even N or an f32 C).
pub static SMALL: KernelDef = KernelDef::new("matmul_small/small", SOURCE, "small", matmul_slots!(ANY));

/// Every kernel of this module (chained by `ops::all_kernels`).
pub static KERNELS: &[&KernelDef] = &[&SMALL];

/// Rows of C per invocation and per workgroup (fixed in the shader).
const SMALL_ROWS: u32 = 8;
/// Columns of C per invocation (fixed in the shader).
const SMALL_COLS: u32 = 4;
/// The most invocations of a workgroup (all along N).
const SMALL_MAX_WG: u32 = 64;

/// A launch of the small kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmallConfig {
    /// Invocations per workgroup, along N (a power of two up to 64).
    pub sn: u32,
}

impl SmallConfig {
    /// The workgroup for an output of N columns: enough invocations to cover N, at most 64.
    pub fn for_columns(n: usize) -> SmallConfig {
        let quads = n.div_ceil(SMALL_COLS as usize).max(1) as u32;
        SmallConfig {
            sn: quads.next_power_of_two().min(SMALL_MAX_WG),
        }
    }

    /// Rows and columns of C per workgroup.
    pub fn output_tile(&self) -> (u32, u32) {
        (SMALL_ROWS, SMALL_COLS * self.sn)
    }

    /// The pipeline constants of this launch.
    pub(super) fn overrides(&self) -> Vec<(&'static str, u64)> {
        vec![("SN", self.sn as u64)]
    }
}

/// The small kernel's launch for this product, or None where a tiled kernel runs it.
/// `TiledTile::SmallKernel` (or `HALFGRAD_TILED=small_kernel` under `Auto`) forces it
/// (`Error::InvalidArgument` for an output it cannot write: odd N and a 16-bit C); `Auto`
/// takes it on software adapters for outputs it can write unless the options or
/// `HALFGRAD_MATMUL` force the tiled kernel.
pub(super) fn choose(
    gpu: &Gpu,
    n: usize,
    fast_ok: bool,
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
    if forced {
        if !fast_ok {
            return Err(Error::InvalidArgument(format!(
                "matmul: the small kernel needs even N or an f32 C (N is {n})"
            )));
        }
        return Ok(Some(SmallConfig::for_columns(n)));
    }
    let software = gpu.adapter().device_type == "Cpu";
    let auto = opts.kernel != MatmulKernel::Tiled && kernel_from_env()? != MatmulKernel::Tiled;
    Ok((software && fast_ok && auto).then(|| SmallConfig::for_columns(n)))
}
