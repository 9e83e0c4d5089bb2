//! The portable tiled kernel: every adapter, every operand dtype, both f16 storage paths,
//! batches and strided views (see `shaders/matmul.wgsl`).

use crate::Gpu;

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
    /// a_tile + b_tile (8 extra columns) + the straddle partial sums, all f32.
    pub fn workgroup_bytes(&self) -> u32 {
        4 * (self.bk * (self.bm() + self.bn() + 8) + self.wg_m * self.wg_n)
    }

    /// The pipeline constants of this tile.
    pub(super) fn overrides(&self) -> Vec<(&'static str, u64)> {
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
    /// 128 x 128 for products of at least 512 x 512 on hardware adapters, else 64 x 64.
    #[default]
    Auto,
    /// 64 x 64 workgroup tile (8 x 8 invocations), K slices of 16.
    Small,
    /// 128 x 128 workgroup tile (16 x 16 invocations), K slices of 8.
    Large,
}

impl TiledTile {
    const SMALL: TiledConfig = TiledConfig {
        wg_m: 8,
        wg_n: 8,
        bk: 16,
    };
    const LARGE: TiledConfig = TiledConfig {
        wg_m: 16,
        wg_n: 16,
        bk: 8,
    };

    /// Each invocation holds an 8 x 8 register tile in both. Large tiles keep more
    /// invocations per workgroup (256, the WebGPU minimum limit); small ones waste less
    /// on small or ragged shapes. Both need under 10 KB of workgroup memory.
    pub fn config(self, gpu: &Gpu, m: usize, n: usize) -> TiledConfig {
        match self {
            TiledTile::Small => Self::SMALL,
            TiledTile::Large => Self::LARGE,
            TiledTile::Auto => {
                let software = gpu.adapter().device_type == "Cpu";
                if m >= 512 && n >= 512 && !software {
                    Self::LARGE
                } else {
                    Self::SMALL
                }
            }
        }
    }
}
