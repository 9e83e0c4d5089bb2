//! Matrix products `C = op(A) @ op(B)` (+ a bias row) (+ the old C), accumulated in f32.
//!
//! op is "as stored" or "transposed", read in place, so a Linear layer's forward
//! `X W^T`, input gradient `dY W` and weight gradient `dY^T X` are one dispatch each.
//! Two kernels in `shaders/matmul.wgsl`:
//! - `tiled`: portable (every adapter, every dtype, both f16 storage paths);
//! - `coop`: cooperative matrices (16x16x16 f16 -> f32), chosen automatically for f16
//!   operands on adapters that offer them.
//!
//! `HALFGRAD_MATMUL=tiled|coop` forces a kernel where the options say `Auto`.

use crate::amp::OverflowFlag;
use crate::kernels::{Access, Bind, Dispatch, KernelDef, Slot, SlotKind, ANY};
use crate::{DType, Error, Gpu, Result, Tensor};

const F16_ONLY: &[DType] = &[DType::F16];

/// Bindings shared by both kernels (the coop kernel narrows a and b to f16).
macro_rules! matmul_slots {
    ($operands:expr) => {
        &[
            Slot::read("a", $operands),
            Slot::read("b", $operands),
            Slot::write("c", ANY),
            Slot::raw("bias", SlotKind::F32, Access::Read),
            Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
        ]
    };
}

/// The portable tiled kernel.
pub static TILED: KernelDef = KernelDef {
    name: "matmul/tiled",
    source: include_str!("../../shaders/matmul.wgsl"),
    section: "tiled",
    slots: matmul_slots!(ANY),
    params: true,
    cooperative_matrix: false,
    needs_f16: false,
};

/// The cooperative-matrix kernel (f16 operands, any output dtype).
pub static COOP: KernelDef = KernelDef {
    name: "matmul/coop",
    source: include_str!("../../shaders/matmul.wgsl"),
    section: "coop",
    slots: matmul_slots!(F16_ONLY),
    params: true,
    cooperative_matrix: true,
    needs_f16: true,
};

/// The cooperative-matrix tile kernel (f16 operands read as 16-byte words, shapes that
/// are whole tiles; see `shaders/matmul_coop.wgsl`).
pub static COOP_TILE: KernelDef = KernelDef {
    name: "matmul/coop_tile",
    source: include_str!("../../shaders/matmul_coop.wgsl"),
    section: "tile",
    slots: &[
        Slot::raw("a", SlotKind::U32x4, Access::Read),
        Slot::raw("b", SlotKind::U32x4, Access::Read),
        Slot::write("c", ANY),
        Slot::raw("bias", SlotKind::F32, Access::Read),
        Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
    ],
    params: true,
    cooperative_matrix: true,
    needs_f16: true,
};

/// Which kernel computes a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulKernel {
    /// `HALFGRAD_MATMUL` if set, else coop for f16 operands where the adapter has
    /// cooperative matrices, else tiled.
    #[default]
    Auto,
    /// The portable tiled kernel.
    Tiled,
    /// The cooperative-matrix kernel; `Error::MissingFeature` where the adapter lacks it,
    /// `Error::DTypeMismatch` for operands other than f16.
    Coop,
}

/// How [`matmul`] reads its operands and writes C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatmulOptions {
    /// A is stored (K, M) and read as its transpose.
    pub trans_a: bool,
    /// B is stored (N, K) and read as its transpose.
    pub trans_b: bool,
    /// C += product (C must be f32) instead of C = product.
    pub accumulate: bool,
    pub kernel: MatmulKernel,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
}

const FLAG_BIAS: u32 = 1;
const FLAG_ACCUMULATE: u32 = 2;
const FLAG_TRANS_A: u32 = 4;
const FLAG_TRANS_B: u32 = 8;

/// Tile shape of the tiled kernel (see the comments in `shaders/matmul.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TiledConfig {
    wg_m: u32,
    wg_n: u32,
    bk: u32,
}

/// Rows and columns of C per invocation (fixed in the shader: an explicit register tile).
const TILED_REGS: u32 = 8;

impl TiledConfig {
    fn bm(&self) -> u32 {
        self.wg_m * TILED_REGS
    }
    fn bn(&self) -> u32 {
        self.wg_n * TILED_REGS
    }
    /// a_tile + b_tile (8 extra columns) + the straddle partial sums, all f32.
    fn workgroup_bytes(&self) -> u32 {
        4 * (self.bk * (self.bm() + self.bn() + 8) + self.wg_m * self.wg_n)
    }
}

/// Tile shape of the tiled kernel, for tuning and tests; [`matmul`] picks one by size.
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
    fn config(self, gpu: &Gpu, m: usize, n: usize) -> TiledConfig {
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

/// K per staged slice of the coop kernel.
const COOP_BK: u32 = 32;

/// Shape of the cooperative-matrix tile kernel's workgroup tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoopTile {
    /// Subgroups along M and along N.
    pub subgroups: (u32, u32),
    /// 16 x 16 accumulator fragments per subgroup along M and along N (1 to 4 each).
    pub frags: (u32, u32),
    /// K per slice staged in workgroup memory (a multiple of 16).
    pub bk: u32,
}

impl CoopTile {
    /// 128 x 128 tile: 2 x 4 subgroups of 64 x 32 (8 fragments each), K slices of 16.
    /// Best measured on an H200 at 4096^3 (58 TFLOP/s; with K slices of 32: 45 in every
    /// layout; 2 x 2 subgroups of 64 x 64: 28). Small slices leave workgroup memory for
    /// more resident workgroups.
    pub const LARGE: CoopTile = CoopTile {
        subgroups: (2, 4),
        frags: (4, 2),
        bk: 16,
    };
    /// 64 x 128 tile: 2 x 4 subgroups of 32 x 32 (K slices of 32: with 16 the copies do
    /// not spread over all 256 invocations). H200: 35 to 42 TFLOP/s.
    pub const MEDIUM: CoopTile = CoopTile {
        subgroups: (2, 4),
        frags: (2, 2),
        bk: 32,
    };
    /// 64 x 64 tile: 2 x 2 subgroups of 32 x 32. H200, 4096^3: 44 TFLOP/s (24 with K
    /// slices of 32).
    pub const SMALL: CoopTile = CoopTile {
        subgroups: (2, 2),
        frags: (2, 2),
        bk: 16,
    };

    /// Rows and columns of C per workgroup.
    pub fn tile(&self) -> (u32, u32) {
        (
            16 * self.subgroups.0 * self.frags.0,
            16 * self.subgroups.1 * self.frags.1,
        )
    }

    /// Workgroup memory: two padded f16 slices of each operand and a 16 x 16 f32
    /// scratch fragment per subgroup.
    fn workgroup_bytes(&self, trans_a: bool, trans_b: bool) -> u32 {
        let (bm, bn) = self.tile();
        let slice = |rows: u32, halves: u32| rows * (halves + 8) * 2;
        let a = if trans_a {
            slice(self.bk, bm)
        } else {
            slice(bm, self.bk)
        };
        let b = if trans_b {
            slice(bn, self.bk)
        } else {
            slice(self.bk, bn)
        };
        2 * (a + b) + 1024 * self.subgroups.0 * self.subgroups.1
    }

    /// Whether this tile shape is one the shader supports with `sg` lanes a subgroup
    /// (16-byte copies spread evenly, at most 8 an invocation per operand).
    fn valid(&self, sg: u32) -> bool {
        let (sg_m, sg_n) = self.subgroups;
        let (fm, f_n) = self.frags;
        let (bm, bn) = self.tile();
        let threads = sg * sg_m * sg_n;
        let copies = |halves: u32| {
            let vecs = halves / 8;
            threads > 0
                && halves.is_multiple_of(8)
                && vecs.is_multiple_of(threads)
                && (1..=8).contains(&(vecs / threads))
        };
        sg_m >= 1
            && sg_n >= 1
            && (1..=4).contains(&fm)
            && (1..=4).contains(&f_n)
            && self.bk >= 16
            && self.bk.is_multiple_of(16)
            && copies(bm * self.bk)
            && copies(bn * self.bk)
    }
}

/// Which tile shape the coop tile kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoopTiles {
    /// Largest of [`CoopTile::LARGE`], `MEDIUM`, `SMALL` that divides the product; the
    /// general coop kernel otherwise.
    #[default]
    Auto,
    /// Never: always the general coop kernel.
    Off,
    /// This shape where it divides the product, else the general coop kernel.
    Fixed(CoopTile),
}

/// Tuning knobs for benchmarks and tests; [`matmul`] uses the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulTuning {
    /// Tile shape of the tiled kernel.
    pub tiled: TiledTile,
    /// Subgroups (along M, along N) of a general coop workgroup; each owns a 32 x 32 block.
    pub coop_subgroups: (u32, u32),
    /// The coop tile kernel's tile, for products that are whole tiles.
    pub coop_tile: CoopTiles,
}

impl Default for MatmulTuning {
    /// Coop 1 x 2 subgroups (32 x 64 tiles): on an H200 at 4096^3 f16, 34 TFLOP/s against
    /// 24 to 26 for 1 x 1, 2 x 1, 2 x 2, 4 x 1 and 1 x 4 (2026-11-28).
    fn default() -> Self {
        MatmulTuning {
            tiled: TiledTile::Auto,
            coop_subgroups: (1, 2),
            coop_tile: CoopTiles::Auto,
        }
    }
}

/// Workgroup memory of the coop kernel: two padded f16 slices, the f32 tile and the
/// odd-N partial sums.
fn coop_workgroup_bytes((sg_m, sg_n): (u32, u32)) -> u32 {
    let (bm, bn) = (32 * sg_m, 32 * sg_n);
    let slice = |rows: u32, cols: u32| 2 * rows * (cols + 8);
    let a = slice(bm, COOP_BK).max(slice(COOP_BK, bm));
    let b = slice(COOP_BK, bn + 8).max(slice(bn + 8, COOP_BK));
    a + b + 4 * bm * bn + 8 * bm
}

/// Ok(subgroup size the kernel is built for) where this device can run the coop kernel
/// with `subgroups` (along M, along N) a workgroup.
fn coop_support(gpu: &Gpu, subgroups: (u32, u32)) -> Result<u32> {
    let caps = gpu.caps();
    let missing = |feature| Error::MissingFeature {
        op: "matmul (coop kernel)",
        feature,
    };
    if caps.cooperative_matrix != Some((16, 16, 16)) {
        return Err(missing(
            "EXPERIMENTAL_COOPERATIVE_MATRIX (16x16x16 f16 -> f32)",
        ));
    }
    if !caps.shader_f16 {
        return Err(missing("SHADER_F16"));
    }
    let Some((_, sg_max)) = caps.subgroups else {
        return Err(missing("SUBGROUP"));
    };
    let (sg_m, sg_n) = subgroups;
    if sg_m == 0 || sg_n == 0 {
        return Err(Error::InvalidArgument(
            "matmul: coop subgroups must be at least 1 x 1".into(),
        ));
    }
    if sg_max * sg_m * sg_n > caps.max_compute_invocations_per_workgroup {
        return Err(missing(
            "max_compute_invocations_per_workgroup >= subgroups x the subgroup size",
        ));
    }
    if coop_workgroup_bytes(subgroups) > caps.max_compute_workgroup_storage_size {
        return Err(missing(
            "max_compute_workgroup_storage_size for this coop tile (17 KiB for 1 x 2)",
        ));
    }
    Ok(sg_max)
}

/// The coop tile kernel's tile for this product, or None where the general coop kernel
/// runs it (a shape that is not whole tiles, or a device without room for the tile).
pub fn coop_tile_for(
    gpu: &Gpu,
    (m, n, k): (usize, usize, usize),
    opts: &MatmulOptions,
    tuning: &MatmulTuning,
) -> Option<CoopTile> {
    let caps = gpu.caps();
    let (_, sg) = caps.subgroups?;
    let fits = |t: &CoopTile| {
        let (bm, bn) = t.tile();
        let (bm, bn, bk) = (bm as usize, bn as usize, t.bk as usize);
        t.valid(sg)
            && m % bm == 0
            && n % bn == 0
            && k % bk == 0
            && sg * t.subgroups.0 * t.subgroups.1 <= caps.max_compute_invocations_per_workgroup
            && t.workgroup_bytes(opts.trans_a, opts.trans_b)
                <= caps.max_compute_workgroup_storage_size
    };
    match tuning.coop_tile {
        CoopTiles::Off => None,
        CoopTiles::Fixed(t) => fits(&t).then_some(t),
        // The largest tile that divides the product: on an H200 the 128 x 128 tile beat
        // 64 x 128 even on (2048 x 1024) outputs that give it only 128 workgroups.
        CoopTiles::Auto => [CoopTile::LARGE, CoopTile::MEDIUM, CoopTile::SMALL]
            .into_iter()
            .find(fits),
    }
}

/// `HALFGRAD_MATMUL`: `tiled`, `coop`, or unset / `auto`.
fn kernel_from_env() -> Result<MatmulKernel> {
    match std::env::var("HALFGRAD_MATMUL") {
        Err(_) => Ok(MatmulKernel::Auto),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(MatmulKernel::Auto),
            "tiled" => Ok(MatmulKernel::Tiled),
            "coop" => Ok(MatmulKernel::Coop),
            other => Err(Error::InvalidArgument(format!(
                "HALFGRAD_MATMUL={other:?} (expected tiled, coop or auto)"
            ))),
        },
    }
}

/// The kernel [`matmul`] uses for these operand dtypes and options: `"tiled"` or `"coop"`.
pub fn chosen_kernel(
    gpu: &Gpu,
    a_dtype: DType,
    b_dtype: DType,
    opts: &MatmulOptions,
) -> Result<&'static str> {
    let requested = match opts.kernel {
        MatmulKernel::Auto => kernel_from_env()?,
        k => k,
    };
    let f16_operands = a_dtype == DType::F16 && b_dtype == DType::F16;
    let subgroups = MatmulTuning::default().coop_subgroups;
    match requested {
        MatmulKernel::Tiled => Ok("tiled"),
        MatmulKernel::Coop => {
            coop_support(gpu, subgroups)?;
            if !f16_operands {
                let got = if a_dtype != DType::F16 {
                    a_dtype
                } else {
                    b_dtype
                };
                return Err(Error::DTypeMismatch {
                    op: "matmul (coop kernel)",
                    expected: "f16 operands".into(),
                    got,
                });
            }
            Ok("coop")
        }
        MatmulKernel::Auto => Ok(if f16_operands && coop_support(gpu, subgroups).is_ok() {
            "coop"
        } else {
            "tiled"
        }),
    }
}

/// The kernel [`matmul`] uses for this product: [`chosen_kernel`], except that `Auto`
/// keeps the tiled kernel where the coop kernel would have to stage every tile through
/// workgroup memory (odd N, or a stored row of A or B that is not a multiple of 8
/// elements, so its fragments are not 16-byte aligned): there the tiled kernel is faster
/// (on an H200: about 3 TFLOP/s staged coop against 13 to 19 tiled).
pub fn kernel_for_shape(
    gpu: &Gpu,
    a_dtype: DType,
    b_dtype: DType,
    (m, n, k): (usize, usize, usize),
    opts: &MatmulOptions,
) -> Result<&'static str> {
    let kernel = chosen_kernel(gpu, a_dtype, b_dtype, opts)?;
    let forced = opts.kernel != MatmulKernel::Auto || kernel_from_env()? != MatmulKernel::Auto;
    let a_row = if opts.trans_a { m } else { k };
    let b_row = if opts.trans_b { k } else { n };
    let direct = n % 2 == 0 && a_row % 8 == 0 && b_row % 8 == 0;
    Ok(if kernel == "coop" && !forced && !direct {
        "tiled"
    } else {
        kernel
    })
}

fn matrix_dims(what: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    match *t.shape() {
        [r, c] if r > 0 && c > 0 => Ok((r, c)),
        [_, _] => Err(Error::Empty {
            what,
            shape: t.shape().to_vec(),
        }),
        _ => Err(Error::shape(
            "matmul",
            format!("{what} of rank 2"),
            format!("{what} of shape {:?}", t.shape()),
        )),
    }
}

/// Builds the dispatch for `C = op(A) @ op(B) (+ bias) (+ C if accumulate)`.
///
/// a: (M, K), or (K, M) if `trans_a`; f16, bf16 or f32
/// b: (K, N), or (N, K) if `trans_b`; f16, bf16 or f32
/// c: (M, N) f32, f16 or bf16 (f32 when `accumulate`)
/// bias: (N) f32, added to every row
/// found_inf: raised when a 16-bit store of C overflows to inf (or is NaN)
pub fn matmul(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    bias: Option<&Tensor>,
    found_inf: Option<&OverflowFlag>,
    opts: &MatmulOptions,
) -> Result<Dispatch> {
    matmul_tuned(
        gpu,
        a,
        b,
        c,
        bias,
        found_inf,
        opts,
        &MatmulTuning::default(),
    )
}

/// [`matmul`] with tile shapes chosen by the caller (benchmarks, tests).
#[allow(clippy::too_many_arguments)]
pub fn matmul_tuned(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    bias: Option<&Tensor>,
    found_inf: Option<&OverflowFlag>,
    opts: &MatmulOptions,
    tuning: &MatmulTuning,
) -> Result<Dispatch> {
    let (ar, ac) = matrix_dims("a", a)?;
    let (br, bc) = matrix_dims("b", b)?;
    let (m, ka) = if opts.trans_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if opts.trans_b { (bc, br) } else { (br, bc) };
    if ka != kb {
        return Err(Error::shape(
            "matmul",
            format!("op(b) with {ka} rows (the inner dimension of op(a))"),
            format!("op(b) of shape ({kb}, {n})"),
        ));
    }
    let k = ka;
    matrix_dims("c", c)?;
    if c.shape() != [m, n] {
        return Err(Error::shape(
            "matmul",
            format!("c of shape [{m}, {n}]"),
            format!("c of shape {:?}", c.shape()),
        ));
    }
    if let Some(bias) = bias {
        if bias.shape() != [n] {
            return Err(Error::shape(
                "matmul",
                format!("bias of shape [{n}]"),
                format!("bias of shape {:?}", bias.shape()),
            ));
        }
        if bias.dtype() != DType::F32 {
            return Err(Error::DTypeMismatch {
                op: "matmul",
                expected: "f32 bias".into(),
                got: bias.dtype(),
            });
        }
    }
    if opts.accumulate && c.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch {
            op: "matmul",
            expected: "f32 c when accumulating".into(),
            got: c.dtype(),
        });
    }
    // Shader indices are u32 (m * n + 1 covers the padding half of the last word).
    let fits = |x: usize, y: usize| x.checked_mul(y).is_some_and(|p| p < u32::MAX as usize);
    if !(fits(m, k) && fits(k, n) && fits(m, n)) {
        return Err(Error::InvalidArgument(format!(
            "matmul: ({m} x {k}) @ ({k} x {n}) has more than 2^32 - 1 elements in an operand"
        )));
    }

    let kernel = kernel_for_shape(gpu, a.dtype(), b.dtype(), (m, n, k), opts)?;
    let trans = |t: bool| u64::from(t);
    let coop_tile = if kernel == "coop" {
        coop_tile_for(gpu, (m, n, k), opts, tuning)
    } else {
        None
    };
    let (def, overrides, (bm, bn)) = if let Some(t) = coop_tile {
        let sg = coop_support(gpu, (1, 1))?;
        let overrides = vec![
            ("TRANS_A", trans(opts.trans_a)),
            ("TRANS_B", trans(opts.trans_b)),
            ("SG", sg as u64),
            ("SG_M", t.subgroups.0 as u64),
            ("SG_N", t.subgroups.1 as u64),
            ("FM", t.frags.0 as u64),
            ("FN", t.frags.1 as u64),
            ("CBK", t.bk as u64),
        ];
        (&COOP_TILE, overrides, t.tile())
    } else if kernel == "coop" {
        let (sg_m, sg_n) = tuning.coop_subgroups;
        let sg = coop_support(gpu, (sg_m, sg_n))?;
        let overrides = vec![
            ("TRANS_A", trans(opts.trans_a)),
            ("TRANS_B", trans(opts.trans_b)),
            ("SG", sg as u64),
            ("SG_M", sg_m as u64),
            ("SG_N", sg_n as u64),
            ("CBK", COOP_BK as u64),
        ];
        (&COOP, overrides, (32 * sg_m, 32 * sg_n))
    } else {
        let t = tuning.tiled.config(gpu, m, n);
        if t.workgroup_bytes() > gpu.caps().max_compute_workgroup_storage_size {
            return Err(Error::MissingFeature {
                op: "matmul (tiled kernel)",
                feature: "max_compute_workgroup_storage_size >= 10 KiB",
            });
        }
        let overrides = vec![
            ("WG_M", t.wg_m as u64),
            ("WG_N", t.wg_n as u64),
            ("BK", t.bk as u64),
        ];
        (&TILED, overrides, (t.bm(), t.bn()))
    };
    let grid = [
        (n as u64).div_ceil(bn as u64),
        (m as u64).div_ceil(bm as u64),
        1,
    ];
    let max = gpu.caps().max_compute_workgroups_per_dimension as u64;
    if grid[0] > max || grid[1] > max {
        return Err(Error::InvalidArgument(format!(
            "matmul: a ({m} x {n}) output needs {} x {} workgroups; the device allows {max} a dimension",
            grid[0], grid[1]
        )));
    }

    // Unused bindings still need a buffer. These are the dispatch's own (not pooled, so
    // nothing else ever lands in them); the bind group keeps them alive.
    let (dummy_bias, dummy_flag) = gpu.scoped("matmul dummy bindings", || {
        let make = |label| {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        (make("matmul no bias"), make("matmul no found_inf"))
    })?;
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        flags: [
            (bias.is_some(), FLAG_BIAS),
            (opts.accumulate, FLAG_ACCUMULATE),
            (opts.trans_a, FLAG_TRANS_A),
            (opts.trans_b, FLAG_TRANS_B),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |f, (_, bit)| f | bit),
    };
    let (bind_a, bind_b) = if coop_tile.is_some() {
        (Bind::Buffer(a.buffer()), Bind::Buffer(b.buffer()))
    } else {
        (Bind::Tensor(a), Bind::Tensor(b))
    };
    gpu.dispatch(
        def,
        &[
            bind_a,
            bind_b,
            Bind::Tensor(c),
            Bind::Buffer(bias.map_or(&dummy_bias, |t| t.buffer())),
            Bind::Buffer(found_inf.map_or(&dummy_flag, |f| f.buffer())),
        ],
        bytemuck::bytes_of(&params),
        &overrides,
        [grid[0] as u32, grid[1] as u32, 1],
    )
}

#[cfg(test)]
mod tests {
    use super::CoopTile;

    /// Every preset spreads its copies evenly over 32-lane subgroups (the H200's size);
    /// a preset that does not is silently skipped by Auto.
    #[test]
    fn coop_tile_presets_are_valid_for_32_lanes() {
        for t in [CoopTile::LARGE, CoopTile::MEDIUM, CoopTile::SMALL] {
            assert!(t.valid(32), "{t:?}");
            assert!(t.workgroup_bytes(false, true) <= 48 << 10, "{t:?}");
            assert!(t.workgroup_bytes(true, false) <= 48 << 10, "{t:?}");
        }
    }
}
