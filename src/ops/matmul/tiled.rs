//! The portable tiled kernels: every adapter, every operand dtype, both f16 storage paths,
//! batches and strided views (see `shaders/matmul.wgsl`): `tiled` takes any output,
//! `tiled_fast` (vec4 workgroup tiles, double-buffered slices) outputs whose words never
//! straddle rows (even N or an f32 C).

use crate::{Error, Gpu, Result};

/// Rows and columns of C per invocation (fixed in the shader: an explicit register tile).
const TILED_REGS: u32 = 8;

/// Tile shape of the tiled kernel (see the comments in `shaders/matmul.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TiledConfig {
    /// Invocations along M (even).
    pub wg_m: u32,
    /// Invocations along N.
    pub wg_n: u32,
    /// K per staged slice (a multiple of 4).
    pub bk: u32,
    /// The `tiled_fast` kernel (16 x 16 invocations, even N or an f32 C only) instead of
    /// `tiled`.
    pub fast: bool,
}

impl TiledConfig {
    /// Rows of C per workgroup.
    pub fn bm(&self) -> u32 {
        self.wg_m * TILED_REGS
    }
    /// Columns of C per workgroup.
    pub fn bn(&self) -> u32 {
        self.wg_n * TILED_REGS
    }
    /// tiled: a_tile + b_tile (8 extra columns) + the straddle partial sums, all f32;
    /// tiled_fast: two buffers of each slice, f32.
    pub fn workgroup_bytes(&self) -> u32 {
        if self.fast {
            return 4 * 2 * self.bk * (self.bm() + self.bn());
        }
        4 * (self.bk * (self.bm() + self.bn() + 8) + self.wg_m * self.wg_n)
    }

    /// The pipeline constants of this tile.
    pub(super) fn overrides(&self) -> Vec<(&'static str, u64)> {
        if self.fast {
            return vec![("FBK", self.bk as u64)];
        }
        vec![
            ("WG_M", self.wg_m as u64),
            ("WG_N", self.wg_n as u64),
            ("BK", self.bk as u64),
        ]
    }
}

/// Tile shape of the tiled kernel, for tuning and tests; `matmul` picks one by size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TiledTile {
    /// `HALFGRAD_TILED` (`small`, `large`, `fast`, `fast16`) if set, `fast` falling back
    /// to the choice below where the output does not suit it; else, for products of at
    /// least 512 x 512 on hardware adapters, `tiled_fast` where it can write C (even N or
    /// an f32 C) and the 128 x 128 tile elsewhere; else 64 x 64.
    #[default]
    Auto,
    /// 64 x 64 workgroup tile (8 x 8 invocations), K slices of 16.
    Small,
    /// 128 x 128 workgroup tile (16 x 16 invocations), K slices of 8.
    Large,
    /// The `tiled_fast` kernel: 128 x 128, double-buffered K slices of 8 (16 KiB of
    /// workgroup memory). Even N or an f32 C only (`Error::InvalidArgument` otherwise).
    Fast,
    /// `Fast` with K slices of 16 (32 KiB of workgroup memory).
    Fast16,
    /// Not a tile: the small kernel of [`small`](super::small) (8 x 4 register blocks
    /// straight from storage), which `Auto` takes on software adapters. Even N or an f32
    /// C only (`Error::InvalidArgument` otherwise).
    SmallKernel,
}

impl TiledTile {
    const SMALL: TiledConfig = TiledConfig {
        wg_m: 8,
        wg_n: 8,
        bk: 16,
        fast: false,
    };
    const LARGE: TiledConfig = TiledConfig {
        wg_m: 16,
        wg_n: 16,
        bk: 8,
        fast: false,
    };
    const FAST: TiledConfig = TiledConfig {
        wg_m: 16,
        wg_n: 16,
        bk: 8,
        fast: true,
    };
    const FAST16: TiledConfig = TiledConfig {
        bk: 16,
        ..Self::FAST
    };

    /// Each invocation holds an 8 x 8 register tile in all. Large tiles keep more
    /// invocations per workgroup (256, the WebGPU minimum limit); small ones waste less
    /// on small or ragged shapes. `fast_ok`: the output suits `tiled_fast` (even N or an
    /// f32 C); a forced `Fast` on one that does not is `Error::InvalidArgument`.
    pub fn config(self, gpu: &Gpu, m: usize, n: usize, fast_ok: bool) -> Result<TiledConfig> {
        let forced_fast = |t: TiledConfig| {
            if fast_ok {
                Ok(t)
            } else {
                Err(Error::InvalidArgument(format!(
                    "matmul: the tiled_fast kernel needs even N or an f32 C (N is {n})"
                )))
            }
        };
        match self {
            TiledTile::Small => Ok(Self::SMALL),
            TiledTile::Large => Ok(Self::LARGE),
            TiledTile::Fast => forced_fast(Self::FAST),
            TiledTile::Fast16 => forced_fast(Self::FAST16),
            // `small::choose` plans it before any tile is asked for.
            TiledTile::SmallKernel => Err(Error::InvalidArgument(
                "matmul: the small kernel has no tiled configuration".into(),
            )),
            TiledTile::Auto => match tile_from_env()? {
                Some(t @ (TiledTile::Small | TiledTile::Large)) => t.config(gpu, m, n, fast_ok),
                Some(t @ (TiledTile::Fast | TiledTile::Fast16)) if fast_ok => {
                    t.config(gpu, m, n, fast_ok)
                }
                _ => {
                    // Hardware adapters, large outputs: the double-buffered vec4 kernel
                    // where it can write C (H200, `halfgrad bench matmul --kernel tiled
                    // --check`, 4096^3: 22.7 / 24.1 / 26.1 TFLOP/s for
                    // f16 / bf16 / f32 operands against 17.9 / 19.0 / 17.7 for LARGE).
                    // Software adapters keep the small tile (and their results' bits).
                    let software = gpu.adapter().device_type == "Cpu";
                    Ok(if m >= 512 && n >= 512 && !software {
                        if fast_ok {
                            Self::FAST
                        } else {
                            Self::LARGE
                        }
                    } else {
                        Self::SMALL
                    })
                }
            },
        }
    }
}

/// `HALFGRAD_TILED`: `small`, `large`, `fast`, `fast16`, `small_kernel`, or unset / `auto`
/// (None).
pub(super) fn tile_from_env() -> Result<Option<TiledTile>> {
    let choices = [
        ("small", TiledTile::Small),
        ("large", TiledTile::Large),
        ("fast", TiledTile::Fast),
        ("fast16", TiledTile::Fast16),
        ("small_kernel", TiledTile::SmallKernel),
    ];
    super::plan::env_choice("HALFGRAD_TILED", &choices)
}
