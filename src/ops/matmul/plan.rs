//! Which kernel and tile shape run a product: a typed [`MatmulPlan`] from the operand
//! dtypes, the shape, the layouts' alignment, the options, the tuning and the adapter.

use super::coop::{coop_support, CoopEpilogue, CoopTile, COOP_BK};
use super::small::SmallConfig;
use super::tiled::{TiledConfig, TiledTile};
use crate::{DType, Error, Gpu, Result};

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
    /// bf16 operands rescaled per row of op(A) and column of op(B) into f16 copies,
    /// multiplied by the f16 kernel `Auto` picks (tiled without cooperative matrices),
    /// scaled back in an epilogue (see [`rescale`](super::rescale)). `Auto` takes this
    /// path by itself for bf16 operands where the f16 product runs on cooperative
    /// matrices; forcing it tests the whole path anywhere. `Error::DTypeMismatch` for
    /// operands other than bf16, `Error::InvalidArgument` for a batch or a C that is not
    /// one dense matrix filling its tensor. (Under `HALFGRAD_MATMUL=rescaled` such
    /// products keep `Auto`'s kernel instead.)
    RescaledF16,
    /// f16 operands multiplied by the f16 kernel `Auto` picks into an f32 scratch, then an
    /// epilogue adds the bias (and the old C) and stores C's dtype (see
    /// [`widen`](super::widen)); in row chunks where the scratch would pass
    /// [`WIDE_SCRATCH_MAX_ELEMS`]. `Auto` takes this path by itself for whole-tile
    /// products into a 16-bit C (or with bias) where the product runs on the
    /// fragment-copy kernel; forcing it tests the whole path anywhere.
    /// `Error::DTypeMismatch` for operands other than f16, `Error::InvalidArgument` for a
    /// batch or a C that is not one dense matrix filling its tensor.
    WidenedF16,
}

/// The most f32 elements a widened product's scratch holds (32 MiB): larger products
/// run in chunks of rows. A graph shares one scratch between all its products.
pub const WIDE_SCRATCH_MAX_ELEMS: usize = 1 << 23;

/// How [`matmul`](super::matmul) reads its operands and writes C.
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

/// Which tile shape the coop tile kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoopTiles {
    /// Whole tiles of one contiguous product into an f32 C without bias: the
    /// fragment-copy kernel with [`AUTO_COPIED_TILE`] and its store epilogue
    /// (`HALFGRAD_COOP=staged|direct` picks another kernel); other whole tiles: the largest
    /// of the staged [`CoopTile::LARGE`], `MEDIUM`, `SMALL` that divides the product;
    /// whole tiles of a batched or strided product (16-byte-aligned views): the
    /// fragment-copy kernel with the first of [`AUTO_STRIDED_COPIED_TILES`] that divides
    /// it (unless `HALFGRAD_COOP=staged|direct`); the general coop kernel otherwise.
    #[default]
    Auto,
    /// Never: always the general coop kernel.
    Off,
    /// This shape where it divides the product, else the general coop kernel.
    Fixed(CoopTile),
    /// The direct coop kernel (fragments straight from global memory) with this shape:
    /// whole tiles of one contiguous product with K a multiple of 16, else
    /// `Error::InvalidArgument` (benchmarks; `Auto` picks it only with
    /// `HALFGRAD_COOP=direct`).
    Direct(CoopTile),
    /// The fragment-copy coop kernel (slices staged by coopLoad / coopStore) with this
    /// shape (`bk` 16, 32 or 64): whole tiles of one contiguous product, or of batched,
    /// strided views whose offsets and strides are multiples of 8 elements, else
    /// `Error::InvalidArgument` (`Auto` picks it with [`AUTO_COPIED_TILE`], and for
    /// batched or strided products with [`AUTO_STRIDED_COPIED_TILES`]).
    Copied(CoopTile),
}

/// Tuning knobs for benchmarks and tests; [`matmul`](super::matmul) uses the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulTuning {
    /// Tile shape of the tiled kernel.
    pub tiled: TiledTile,
    /// Subgroups (along M, along N) of a general coop workgroup; each owns a 32 x 32 block.
    pub coop_subgroups: (u32, u32),
    /// The coop tile kernel's tile, for products that are whole tiles.
    pub coop_tile: CoopTiles,
    /// How the coop tile and direct kernels write C.
    pub coop_epilogue: CoopEpilogue,
    /// Workgroup order of the coop tile and direct kernels: 0 or 1 row-major over the
    /// grid; G > 1 sweeps G tile rows before moving one tile column (L2 reuse).
    pub coop_group_m: u32,
    /// The most f32 elements a widened product's scratch holds before it runs in row
    /// chunks ([`WIDE_SCRATCH_MAX_ELEMS`]; tests lower it to exercise the chunks).
    pub wide_scratch_elems: usize,
}

impl Default for MatmulTuning {
    /// Coop 1 x 2 subgroups (32 x 64 tiles): on an H200 at 4096^3 f16, 34 TFLOP/s against
    /// 24 to 26 for 1 x 1, 2 x 1, 2 x 2, 4 x 1 and 1 x 4 (2026-11-28).
    fn default() -> Self {
        MatmulTuning {
            tiled: TiledTile::Auto,
            coop_subgroups: (1, 2),
            coop_tile: CoopTiles::Auto,
            coop_epilogue: CoopEpilogue::Scratch,
            coop_group_m: 1,
            wide_scratch_elems: WIDE_SCRATCH_MAX_ELEMS,
        }
    }
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
    let (sg_min, sg) = caps.subgroups?;
    let fits = |t: &CoopTile| {
        let (bm, bn) = t.tile();
        let (bm, bn, bk) = (bm as usize, bn as usize, t.bk as usize);
        t.valid(sg)
            && m % bm == 0
            && n % bn == 0
            && k % bk == 0
            && sg * t.subgroups.0 * t.subgroups.1 <= caps.max_compute_invocations_per_workgroup
            && t.slice_bytes(opts.trans_a, opts.trans_b)
                + tuning
                    .coop_epilogue
                    .scratch_bytes(sg * t.subgroups.0 * t.subgroups.1, sg_min)
                <= caps.max_compute_workgroup_storage_size
    };
    match tuning.coop_tile {
        CoopTiles::Off | CoopTiles::Direct(_) | CoopTiles::Copied(_) => None,
        CoopTiles::Fixed(t) => fits(&t).then_some(t),
        // The largest tile that divides the product: on an H200 the 128 x 128 tile beat
        // 64 x 128 even on (2048 x 1024) outputs that give it only 128 workgroups.
        CoopTiles::Auto => [CoopTile::LARGE, CoopTile::MEDIUM, CoopTile::SMALL]
            .into_iter()
            .find(fits),
    }
}

/// The fragment-copy kernel's tile that `CoopTiles::Auto` takes for whole tiles whose C
/// is f32 without bias (its store epilogue writes C straight from the fragments):
/// 128 x 128, 2 x 2 subgroups of 4 x 4 fragments, K slices of 16. H200, 4096^3 f16 -> f32
/// (`bench matmul --check`, docs/PERFORMANCE.md): 108 TFLOP/s (122 with --trans-a, 90
/// with --trans-b), against 59 / 53 / 57 for the staged LARGE tile with its scratch
/// epilogue, the previous default. Other outputs keep the staged kernel.
pub const AUTO_COPIED_TILE: CoopTile = CoopTile {
    subgroups: (2, 2),
    frags: (4, 4),
    bk: 16,
};

/// The fragment-copy kernel's tiles that `CoopTiles::Auto` tries, in order, for whole
/// tiles of a batched or strided product (attention's per-head products: N or M is the
/// head width, 64 in GPT-2 small and shakespeare-char): [`AUTO_COPIED_TILE`], then 128 x
/// 64 (2 x 2 subgroups of 4 x 2 fragments), 64 x 128 (2 x 4) and 64 x 64 (2 x 2), K
/// slices of 16. Not measured yet: chosen as the 128 x 128 tile's halves (the same
/// subgroups, half the fragments along one side) so each subgroup still copies whole
/// fragments of both operands. The store epilogue for f32 C without bias, the requested
/// scratch epilogue otherwise (those products had only the general coop kernel).
pub const AUTO_STRIDED_COPIED_TILES: [CoopTile; 4] = [
    AUTO_COPIED_TILE,
    CoopTile {
        subgroups: (2, 2),
        frags: (4, 2),
        bk: 16,
    },
    CoopTile {
        subgroups: (2, 2),
        frags: (2, 4),
        bk: 16,
    },
    CoopTile {
        subgroups: (2, 2),
        frags: (2, 2),
        bk: 16,
    },
];

/// The first of [`AUTO_STRIDED_COPIED_TILES`] whose tiles divide an (M, N, K) product:
/// the tile `CoopTiles::Auto` gives a batched or strided product (the adapter's limits
/// and the views' alignment are checked after; no device needed).
pub fn strided_copied_tile(m: usize, n: usize, k: usize) -> Option<CoopTile> {
    AUTO_STRIDED_COPIED_TILES.into_iter().find(|t| {
        let (bm, bn) = t.tile();
        m.is_multiple_of(bm as usize)
            && n.is_multiple_of(bn as usize)
            && k.is_multiple_of(t.bk as usize)
    })
}

/// The direct kernel's tile for `HALFGRAD_COOP=direct` (H200, 4096^3 with --trans-a:
/// 109 TFLOP/s; plain layout 76).
const AUTO_DIRECT_TILE: CoopTile = CoopTile {
    subgroups: (2, 2),
    frags: (4, 4),
    bk: 32,
};

/// Which kernel `CoopTiles::Auto` runs whole tiles on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AutoCoop {
    Copied,
    Staged,
    Direct,
}

/// The choice environment variable `name` names: `None` when unset, empty or `auto`
/// (where `auto` is a choice), else the entry of `choices` it spells (case-insensitive),
/// else a typed error listing them.
pub(super) fn env_choice<T: Copy>(name: &str, choices: &[(&str, T)]) -> Result<Option<T>> {
    let Ok(v) = std::env::var(name) else {
        return Ok(None);
    };
    let v = v.trim().to_ascii_lowercase();
    if v.is_empty() || v == "auto" {
        return Ok(None);
    }
    match choices.iter().find(|(key, _)| *key == v) {
        Some(&(_, choice)) => Ok(Some(choice)),
        None => {
            let names: Vec<&str> = choices.iter().map(|(key, _)| *key).collect();
            Err(Error::InvalidArgument(format!(
                "{name}={v:?} (expected {} or auto)",
                names.join(", ")
            )))
        }
    }
}

/// `HALFGRAD_COOP`: `copied` (or unset: the fragment-copy kernel for f32 outputs without
/// bias and for batched or strided products, the staged one for the rest), `staged`
/// (always staged; batched products on the general kernel, as before) or `direct`: the
/// kernel `CoopTiles::Auto` runs whole tiles on, so whole training steps can be measured
/// with each.
fn auto_coop_from_env() -> Result<AutoCoop> {
    let choices = [
        ("copied", AutoCoop::Copied),
        ("staged", AutoCoop::Staged),
        ("direct", AutoCoop::Direct),
    ];
    Ok(env_choice("HALFGRAD_COOP", &choices)?.unwrap_or(AutoCoop::Copied))
}

/// `HALFGRAD_COOP_EPILOGUE`: `scratch`, `subgroup` or `store`, for tunings that leave the
/// coop epilogue at its default.
fn epilogue_from_env() -> Result<Option<CoopEpilogue>> {
    let choices = [
        ("scratch", CoopEpilogue::Scratch),
        ("subgroup", CoopEpilogue::SubgroupScratch),
        ("store", CoopEpilogue::Store),
    ];
    env_choice("HALFGRAD_COOP_EPILOGUE", &choices)
}

/// `HALFGRAD_MATMUL`: `tiled`, `coop`, `rescaled`, `widened`, or unset / `auto`.
pub(super) fn kernel_from_env() -> Result<MatmulKernel> {
    let choices = [
        ("tiled", MatmulKernel::Tiled),
        ("coop", MatmulKernel::Coop),
        ("rescaled", MatmulKernel::RescaledF16),
        ("widened", MatmulKernel::WidenedF16),
    ];
    Ok(env_choice("HALFGRAD_MATMUL", &choices)?.unwrap_or(MatmulKernel::Auto))
}

/// The kernel [`matmul`](super::matmul) uses for these operand dtypes and options: `"tiled"` or `"coop"`.
/// (`RescaledF16` and `WidenedF16` are chosen per product by [`plan_for`](super::plan_for);
/// here they read as `Auto`.)
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
        MatmulKernel::Auto | MatmulKernel::RescaledF16 | MatmulKernel::WidenedF16 => {
            Ok(if f16_operands && coop_support(gpu, subgroups).is_ok() {
                "coop"
            } else {
                "tiled"
            })
        }
    }
}

/// The kernel [`matmul`](super::matmul) uses for this product: [`chosen_kernel`], except
/// that `Auto` keeps the tiled kernel where the coop kernel would have to stage every tile
/// through workgroup memory (odd N, or a stored row of A or B that is not a multiple of 8
/// elements, so its fragments are not 16-byte aligned): there the tiled kernel is faster
/// (on an H200: about 3 TFLOP/s staged coop against 13 to 19 tiled).
pub fn kernel_for_shape(
    gpu: &Gpu,
    a_dtype: DType,
    b_dtype: DType,
    (m, n, k): (usize, usize, usize),
    opts: &MatmulOptions,
) -> Result<&'static str> {
    let a_row = if opts.trans_a { m } else { k };
    let b_row = if opts.trans_b { k } else { n };
    let direct = n % 2 == 0 && a_row % 8 == 0 && b_row % 8 == 0;
    kernel_for(gpu, a_dtype, b_dtype, opts, direct)
}

/// [`chosen_kernel`], falling back to tiled under `Auto` where the coop kernel could not
/// load its fragments straight from the operands (`direct` false).
fn kernel_for(
    gpu: &Gpu,
    a_dtype: DType,
    b_dtype: DType,
    opts: &MatmulOptions,
    direct: bool,
) -> Result<&'static str> {
    let kernel = chosen_kernel(gpu, a_dtype, b_dtype, opts)?;
    let requested = match opts.kernel {
        MatmulKernel::Auto => kernel_from_env()?,
        k => k,
    };
    let forced = matches!(requested, MatmulKernel::Tiled | MatmulKernel::Coop);
    Ok(if kernel == "coop" && !forced && !direct {
        "tiled"
    } else {
        kernel
    })
}

/// A launch of one of the whole-tile cooperative-matrix kernels (staged, direct,
/// fragment-copy): the tile, the adapter's largest and smallest subgroup sizes, the
/// epilogue that runs and the workgroup order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoopTilePlan {
    pub tile: CoopTile,
    pub sg: u32,
    pub sg_min: u32,
    pub epilogue: CoopEpilogue,
    /// Tile rows a group of workgroups sweeps (1: row-major over the grid).
    pub group_m: u32,
}

impl CoopTilePlan {
    /// The pipeline constants the three kernels share; `k_step` is each one's own (the
    /// staged and fragment-copy kernels' `CBK`, the direct kernel's `PIPE`).
    fn overrides(
        &self,
        opts: &MatmulOptions,
        k_step: (&'static str, u64),
    ) -> Vec<(&'static str, u64)> {
        vec![
            ("TRANS_A", u64::from(opts.trans_a)),
            ("TRANS_B", u64::from(opts.trans_b)),
            ("SG", self.sg as u64),
            ("SG_MIN", self.sg_min as u64),
            ("SG_M", self.tile.subgroups.0 as u64),
            ("SG_N", self.tile.subgroups.1 as u64),
            ("FM", self.tile.frags.0 as u64),
            ("FN", self.tile.frags.1 as u64),
            k_step,
            ("EPI_SYNC", epi_sync(self.epilogue)),
            ("GROUP_M", self.group_m.max(1) as u64),
        ]
    }
}

/// The kernel and tile shape that run one (batched) product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulPlan {
    /// The portable tiled kernel with this tile.
    Tiled(TiledConfig),
    /// The software adapters' kernel ([`small`](super::small)).
    Small(SmallConfig),
    /// The general cooperative-matrix kernel: `subgroups` (along M, along N) of `sg`
    /// lanes, each owning a 32 x 32 block.
    Coop { subgroups: (u32, u32), sg: u32 },
    /// The staged cooperative-matrix tile kernel (whole tiles of one contiguous product).
    CoopTile(CoopTilePlan),
    /// The direct cooperative-matrix kernel (whole tiles of one contiguous product,
    /// fragments straight from global memory).
    CoopDirect(CoopTilePlan),
    /// The fragment-copy cooperative-matrix kernel (whole tiles of one product or a batch
    /// of strided views, slices staged by cooperative-matrix loads and stores).
    CoopCopied(CoopTilePlan),
    /// bf16 operands rescaled into f16 copies, multiplied by `product` into an f32
    /// scratch, scaled back by an epilogue ([`MatmulKernel::RescaledF16`]).
    Rescaled { product: F16Product },
    /// f16 operands multiplied by `product` into an f32 scratch of `chunk_rows` rows of
    /// C at a time, each chunk then stored in C's dtype with the bias by an epilogue
    /// ([`MatmulKernel::WidenedF16`]).
    Widened {
        product: F16Product,
        chunk_rows: usize,
    },
}

/// One kernel launch of a product: the kernel of a single-dispatch plan, or the f16
/// kernel inside a [`MatmulPlan::Rescaled`] product. Mirrors the single-kernel plans
/// field for field, so a rescaled product runs on any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F16Product {
    Tiled(TiledConfig),
    Small(SmallConfig),
    Coop { subgroups: (u32, u32), sg: u32 },
    CoopTile(CoopTilePlan),
    CoopDirect(CoopTilePlan),
    CoopCopied(CoopTilePlan),
}

impl F16Product {
    /// The plan that runs this kernel on its own.
    pub fn plan(self) -> MatmulPlan {
        match self {
            F16Product::Tiled(t) => MatmulPlan::Tiled(t),
            F16Product::Small(s) => MatmulPlan::Small(s),
            F16Product::Coop { subgroups, sg } => MatmulPlan::Coop { subgroups, sg },
            F16Product::CoopTile(p) => MatmulPlan::CoopTile(p),
            F16Product::CoopDirect(p) => MatmulPlan::CoopDirect(p),
            F16Product::CoopCopied(p) => MatmulPlan::CoopCopied(p),
        }
    }

    /// The kernel of a plan (a rescaled plan's inner kernel).
    pub(super) fn of(plan: MatmulPlan) -> F16Product {
        match plan {
            MatmulPlan::Tiled(t) => F16Product::Tiled(t),
            MatmulPlan::Small(s) => F16Product::Small(s),
            MatmulPlan::Coop { subgroups, sg } => F16Product::Coop { subgroups, sg },
            MatmulPlan::CoopTile(p) => F16Product::CoopTile(p),
            MatmulPlan::CoopDirect(p) => F16Product::CoopDirect(p),
            MatmulPlan::CoopCopied(p) => F16Product::CoopCopied(p),
            MatmulPlan::Rescaled { product } | MatmulPlan::Widened { product, .. } => product,
        }
    }
}

impl MatmulPlan {
    /// `"tiled"`, `"tiled_fast"`, `"coop"`, `"coop_tile"`, `"coop_direct"` or
    /// `"coop_copied"`, or `"rescaled+"` the f16 kernel inside (benchmark tables, logs).
    pub fn name(&self) -> &'static str {
        match self {
            MatmulPlan::Tiled(t) if t.fast => "tiled_fast",
            MatmulPlan::Tiled(_) => "tiled",
            MatmulPlan::Small(_) => "small",
            MatmulPlan::Coop { .. } => "coop",
            MatmulPlan::CoopTile(_) => "coop_tile",
            MatmulPlan::CoopDirect(_) => "coop_direct",
            MatmulPlan::CoopCopied(_) => "coop_copied",
            MatmulPlan::Rescaled { product } => match product {
                F16Product::Tiled(t) if t.fast => "rescaled+tiled_fast",
                F16Product::Tiled(_) => "rescaled+tiled",
                F16Product::Small(_) => "rescaled+small",
                F16Product::Coop { .. } => "rescaled+coop",
                F16Product::CoopTile(_) => "rescaled+coop_tile",
                F16Product::CoopDirect(_) => "rescaled+coop_direct",
                F16Product::CoopCopied(_) => "rescaled+coop_copied",
            },
            MatmulPlan::Widened { product, .. } => match product {
                F16Product::Tiled(t) if t.fast => "widened+tiled_fast",
                F16Product::Tiled(_) => "widened+tiled",
                F16Product::Small(_) => "widened+small",
                F16Product::Coop { .. } => "widened+coop",
                F16Product::CoopTile(_) => "widened+coop_tile",
                F16Product::CoopDirect(_) => "widened+coop_direct",
                F16Product::CoopCopied(_) => "widened+coop_copied",
            },
        }
    }

    /// Rows and columns of C per workgroup.
    pub fn output_tile(&self) -> (u32, u32) {
        match self {
            MatmulPlan::Tiled(t) => (t.bm(), t.bn()),
            MatmulPlan::Small(s) => s.output_tile(),
            MatmulPlan::Coop { subgroups, .. } => (32 * subgroups.0, 32 * subgroups.1),
            MatmulPlan::CoopTile(p) | MatmulPlan::CoopDirect(p) | MatmulPlan::CoopCopied(p) => {
                p.tile.tile()
            }
            MatmulPlan::Rescaled { product } | MatmulPlan::Widened { product, .. } => {
                product.plan().output_tile()
            }
        }
    }

    /// The pipeline constants of this plan.
    pub(super) fn overrides(&self, opts: &MatmulOptions) -> Vec<(&'static str, u64)> {
        let trans = |t: bool| u64::from(t);
        match *self {
            MatmulPlan::Tiled(t) => t.overrides(),
            MatmulPlan::Small(s) => s.overrides(),
            MatmulPlan::Coop { subgroups, sg } => vec![
                ("TRANS_A", trans(opts.trans_a)),
                ("TRANS_B", trans(opts.trans_b)),
                ("SG", sg as u64),
                ("SG_M", subgroups.0 as u64),
                ("SG_N", subgroups.1 as u64),
                ("CBK", COOP_BK as u64),
            ],
            MatmulPlan::CoopTile(p) => p.overrides(opts, ("CBK", p.tile.bk as u64)),
            MatmulPlan::CoopDirect(p) => p.overrides(opts, ("PIPE", u64::from(p.tile.bk == 32))),
            MatmulPlan::CoopCopied(p) => p.overrides(opts, ("CBK", p.tile.bk as u64)),
            MatmulPlan::Rescaled { product } | MatmulPlan::Widened { product, .. } => {
                product.plan().overrides(opts)
            }
        }
    }
}

/// The shaders' EPI_SYNC: 1 (subgroup barriers) except for the workgroup-barrier scratch.
fn epi_sync(epilogue: CoopEpilogue) -> u64 {
    u64::from(epilogue != CoopEpilogue::Scratch)
}

/// What the planner needs to know about a product beyond dtypes and options.
#[derive(Debug, Clone, Copy)]
pub(super) struct PlanShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Every operand's rows, offsets and batch strides are multiples of 8 elements and
    /// C's output words do not straddle rows: coop fragments load straight from memory.
    pub direct: bool,
    /// One dense product filling C from element 0, A and B dense from element 0: the
    /// coop tile kernel's only layout.
    pub contiguous: bool,
    /// Every operand's offset, row stride and used batch strides (C's too) are multiples
    /// of 8 elements: the fragment-copy kernel's fragment rows are 16-byte aligned in any
    /// (batched, strided) layout.
    pub aligned: bool,
    /// C is f32 and there is no bias: the coop epilogue may coopStore straight into C.
    pub f32_store: bool,
    /// C is f32 or N is even: its column pairs at even columns never straddle an output
    /// word, so the tiled_fast kernel can write it.
    pub fast_tiled: bool,
    /// One product (no batch) into a C that is one dense matrix filling its tensor: the
    /// rescaled path's layout (its copies and scratch are dense whatever A and B are).
    pub rescalable: bool,
    /// Dense f16 copies of A and B would be 16-byte aligned rows (stored columns of
    /// both multiples of 8) and N is even: their product runs coop fragments from memory.
    pub copies_direct: bool,
    /// Every operand's offset, rows and batch strides are multiples of 8 elements.
    pub aligned8: bool,
    /// The stored columns of A and of B are multiples of 8.
    pub stored_cols_8: bool,
}

/// The plan for a product ([`MatmulKernel`] choice as in [`kernel_for_shape`]; the coop
/// tile kernel only for contiguous products that are whole tiles).
pub(super) fn plan(
    gpu: &Gpu,
    (a_dtype, b_dtype): (DType, DType),
    shape: &PlanShape,
    opts: &MatmulOptions,
    tuning: &MatmulTuning,
) -> Result<MatmulPlan> {
    if let Some(product) = rescaled_product(gpu, (a_dtype, b_dtype), shape, opts, tuning)? {
        return Ok(MatmulPlan::Rescaled { product });
    }
    if let Some((product, chunk_rows)) =
        widened_product(gpu, (a_dtype, b_dtype), shape, opts, tuning)?
    {
        return Ok(MatmulPlan::Widened {
            product,
            chunk_rows,
        });
    }
    product_plan(gpu, (a_dtype, b_dtype), shape, opts, tuning)
}

/// Typed errors for a forced two-pass path (`rescaled` bf16, `widened` f16) that cannot
/// take this product: operands other than `operands`, or not one unbatched product into
/// a C that is one dense matrix filling its tensor.
fn check_forced_path(
    (op, path): (&'static str, &str),
    operands: DType,
    (a_dtype, b_dtype): (DType, DType),
    shape: &PlanShape,
) -> Result<()> {
    if a_dtype != operands || b_dtype != operands {
        return Err(Error::DTypeMismatch {
            op,
            expected: format!("{operands} operands"),
            got: if a_dtype != operands {
                a_dtype
            } else {
                b_dtype
            },
        });
    }
    if !shape.rescalable {
        return Err(Error::InvalidArgument(format!(
            "matmul: the {path} f16 path takes one unbatched product into a C that is one dense matrix filling its tensor"
        )));
    }
    Ok(())
}

/// The f16 kernel and chunk rows of a widened product, or None where the product takes
/// another path: `WidenedF16` forced by the options (errors where it does not apply) or
/// by the environment (where it applies and C is not an f32 C without bias), else under `Auto` for f16 operands whose
/// product would not store straight into C (a 16-bit C or a bias) when the f32 product
/// runs on the fragment-copy kernel. H200 (`bench matmul --m 4096 --n 4096 --k 4096
/// --out-dtype f16`, docs/PERFORMANCE.md): 51 TFLOP/s on the staged kernel's scratch
/// epilogue, 19 on the fragment-copy kernel's, 109 for the same product into f32.
fn widened_product(
    gpu: &Gpu,
    (a_dtype, b_dtype): (DType, DType),
    shape: &PlanShape,
    opts: &MatmulOptions,
    tuning: &MatmulTuning,
) -> Result<Option<(F16Product, usize)>> {
    let f16 = a_dtype == DType::F16 && b_dtype == DType::F16;
    let applies = f16 && shape.rescalable;
    let forced = match opts.kernel {
        MatmulKernel::WidenedF16 => {
            check_forced_path(
                ("matmul (widened f16 path)", "widened"),
                DType::F16,
                (a_dtype, b_dtype),
                shape,
            )?;
            true
        }
        MatmulKernel::Auto => {
            let env = kernel_from_env()?;
            if env == MatmulKernel::WidenedF16 {
                // Not where the product already stores straight into an f32 C (the
                // widened product's own inner product is such a one).
                if !applies || shape.f32_store {
                    return Ok(None);
                }
                true
            } else {
                let default_coop = tuning.coop_tile == CoopTiles::Auto
                    && tuning.coop_epilogue == CoopEpilogue::Scratch
                    && epilogue_from_env()?.is_none()
                    && auto_coop_from_env()? == AutoCoop::Copied;
                if !(env == MatmulKernel::Auto
                    && applies
                    && !shape.f32_store
                    && default_coop
                    && coop_support(gpu, MatmulTuning::default().coop_subgroups).is_ok())
                {
                    return Ok(None);
                }
                false
            }
        }
        MatmulKernel::Tiled | MatmulKernel::Coop | MatmulKernel::RescaledF16 => return Ok(None),
    };
    // The scratch is one dense f32 matrix without bias: the product stores straight
    // into it (chunk 0 reads A from element 0, like the whole product).
    let inner_shape = |m: usize| PlanShape {
        m,
        f32_store: true,
        rescalable: false,
        ..*shape
    };
    let inner = MatmulOptions {
        kernel: MatmulKernel::Auto,
        accumulate: false,
        ..*opts
    };
    let f16_pair = (DType::F16, DType::F16);
    let whole = product_plan(gpu, f16_pair, &inner_shape(shape.m), &inner, tuning)?;
    let (bm, _) = whole.output_tile();
    let cap = tuning.wide_scratch_elems;
    let chunk_rows = if shape.m * shape.n <= cap {
        shape.m
    } else {
        // Whole tiles of rows (a chunk of a whole-tile product is whole tiles too); at
        // least one tile, whatever N.
        let rows = cap / shape.n / bm as usize * bm as usize;
        rows.max(bm as usize).min(shape.m)
    };
    let product = if chunk_rows == shape.m {
        whole
    } else {
        product_plan(gpu, f16_pair, &inner_shape(chunk_rows), &inner, tuning)?
    };
    // Chunks after the first read A from an offset (whole row tiles of a K that is whole
    // slices: a multiple of 8 elements), which the fragment-copy kernel takes as a
    // strided view.
    if !forced && !matches!(product, MatmulPlan::CoopCopied(_)) {
        return Ok(None);
    }
    Ok(Some((F16Product::of(product), chunk_rows)))
}

/// The f16 kernel of a rescaled product, or None where the product takes another path:
/// `RescaledF16` forced by the options (errors where it does not apply) or by the
/// environment (where it applies), else under `Auto` for bf16 operands when the f16
/// copies' product runs on cooperative matrices straight from memory.
fn rescaled_product(
    gpu: &Gpu,
    (a_dtype, b_dtype): (DType, DType),
    shape: &PlanShape,
    opts: &MatmulOptions,
    tuning: &MatmulTuning,
) -> Result<Option<F16Product>> {
    let bf16 = a_dtype == DType::BF16 && b_dtype == DType::BF16;
    let applies = bf16 && shape.rescalable;
    match opts.kernel {
        MatmulKernel::RescaledF16 => {
            check_forced_path(
                ("matmul (rescaled f16 path)", "rescaled"),
                DType::BF16,
                (a_dtype, b_dtype),
                shape,
            )?;
        }
        MatmulKernel::Auto => {
            let env = kernel_from_env()?;
            let subgroups = MatmulTuning::default().coop_subgroups;
            let from_env = env == MatmulKernel::RescaledF16;
            let on_matrix_units = env == MatmulKernel::Auto
                && shape.copies_direct
                && coop_support(gpu, subgroups).is_ok();
            if !(applies && (from_env || on_matrix_units)) {
                return Ok(None);
            }
        }
        MatmulKernel::Tiled | MatmulKernel::Coop | MatmulKernel::WidenedF16 => return Ok(None),
    }
    // The copies are dense (M, K) / (K, M) and (K, N) / (N, K) f16 matrices and the
    // scratch one dense (M, N) f32 matrix without bias: the f16 product is contiguous
    // and a coop epilogue may store straight into the scratch.
    let copies = PlanShape {
        direct: shape.copies_direct,
        contiguous: true,
        aligned: shape.copies_direct,
        f32_store: true,
        fast_tiled: true,
        rescalable: false,
        // Not the small kernel: without matrix units a rescaled product runs only when
        // forced (tests), on the tiled kernel it was written against.
        stored_cols_8: false,
        ..*shape
    };
    let inner = MatmulOptions {
        kernel: MatmulKernel::Auto,
        accumulate: false,
        ..*opts
    };
    let f16 = (DType::F16, DType::F16);
    Ok(Some(F16Product::of(product_plan(
        gpu, f16, &copies, &inner, tuning,
    )?)))
}

/// The plan of one kernel (no rescale) for a product.
fn product_plan(
    gpu: &Gpu,
    (a_dtype, b_dtype): (DType, DType),
    shape: &PlanShape,
    opts: &MatmulOptions,
    tuning: &MatmulTuning,
) -> Result<MatmulPlan> {
    let (m, n, k) = (shape.m, shape.n, shape.k);
    if kernel_for(gpu, a_dtype, b_dtype, opts, shape.direct)? == "coop" {
        let requested = match (tuning.coop_epilogue, epilogue_from_env()?) {
            (CoopEpilogue::Scratch, Some(e)) => e,
            (e, _) => e,
        };
        let epilogue = requested.resolve(shape.f32_store);
        let sg_min = gpu.caps().subgroups.map_or(1, |(lo, _)| lo);
        let group_m = tuning.coop_group_m;
        if let CoopTiles::Direct(tile) = tuning.coop_tile {
            let sg = coop_support(gpu, (1, 1))?;
            check_whole_tiles(gpu, false, &tile, shape, sg, sg_min, epilogue)?;
            return Ok(MatmulPlan::CoopDirect(CoopTilePlan {
                tile,
                sg,
                sg_min,
                epilogue,
                group_m,
            }));
        }
        if let CoopTiles::Copied(tile) = tuning.coop_tile {
            let sg = coop_support(gpu, (1, 1))?;
            check_whole_tiles(gpu, true, &tile, shape, sg, sg_min, epilogue)?;
            return Ok(MatmulPlan::CoopCopied(CoopTilePlan {
                tile,
                sg,
                sg_min,
                epilogue,
                group_m,
            }));
        }
        if shape.contiguous && tuning.coop_tile == CoopTiles::Auto {
            let auto = auto_coop_from_env()?;
            // The fragment-copy kernel only where it stores straight into C (f32, no bias):
            // through its scratch epilogue it ran 19 TFLOP/s on the H200 against 50 for the
            // staged kernel (4096^3, f16 C). Requested epilogues other than the default
            // (scratch) keep their choice.
            let store = CoopEpilogue::Store.resolve(shape.f32_store);
            let candidate = match auto {
                AutoCoop::Copied if store == CoopEpilogue::Store => {
                    Some((true, AUTO_COPIED_TILE, store))
                }
                AutoCoop::Copied | AutoCoop::Staged => None,
                AutoCoop::Direct => Some((false, AUTO_DIRECT_TILE, epilogue)),
            };
            if let Some((copied, tile, epilogue)) = candidate {
                let sg = coop_support(gpu, (1, 1))?;
                if check_whole_tiles(gpu, copied, &tile, shape, sg, sg_min, epilogue).is_ok() {
                    return Ok(if copied {
                        MatmulPlan::CoopCopied(CoopTilePlan {
                            tile,
                            sg,
                            sg_min,
                            epilogue,
                            group_m,
                        })
                    } else {
                        MatmulPlan::CoopDirect(CoopTilePlan {
                            tile,
                            sg,
                            sg_min,
                            epilogue,
                            group_m,
                        })
                    });
                }
            }
        }
        // Batched or strided whole tiles (attention's products): the fragment-copy kernel
        // reads any layout whose rows are 16-byte aligned; the staged and direct kernels
        // take one contiguous product only, so these ran on the general coop kernel.
        if !shape.contiguous
            && tuning.coop_tile == CoopTiles::Auto
            && auto_coop_from_env()? == AutoCoop::Copied
        {
            if let Some(tile) = strided_copied_tile(m, n, k) {
                let epilogue = if shape.f32_store {
                    CoopEpilogue::Store
                } else {
                    epilogue
                };
                let sg = coop_support(gpu, (1, 1))?;
                if check_whole_tiles(gpu, true, &tile, shape, sg, sg_min, epilogue).is_ok() {
                    return Ok(MatmulPlan::CoopCopied(CoopTilePlan {
                        tile,
                        sg,
                        sg_min,
                        epilogue,
                        group_m,
                    }));
                }
            }
        }
        if shape.contiguous {
            if let Some(tile) = coop_tile_for(gpu, (m, n, k), opts, tuning) {
                let sg = coop_support(gpu, (1, 1))?;
                return Ok(MatmulPlan::CoopTile(CoopTilePlan {
                    tile,
                    sg,
                    sg_min,
                    epilogue,
                    group_m: tuning.coop_group_m,
                }));
            }
        }
        let subgroups = tuning.coop_subgroups;
        let sg = coop_support(gpu, subgroups)?;
        return Ok(MatmulPlan::Coop { subgroups, sg });
    }
    if let Some(s) = super::small::choose(gpu, (a_dtype, b_dtype), shape, opts, tuning.tiled)? {
        return Ok(MatmulPlan::Small(s));
    }
    let t = tuning.tiled.config(gpu, m, n, shape.fast_tiled)?;
    if t.workgroup_bytes() > gpu.caps().max_compute_workgroup_storage_size {
        return Err(Error::MissingFeature {
            op: "matmul (tiled kernel)",
            feature: if t.fast {
                "max_compute_workgroup_storage_size >= 16 KiB (32 KiB for K slices of 16)"
            } else {
                "max_compute_workgroup_storage_size >= 10 KiB"
            },
        });
    }
    Ok(MatmulPlan::Tiled(t))
}

/// Ok where the direct (or, `copied`, the fragment-copy) coop kernel can run this product
/// with `tile`: a valid shape, whole tiles, K a multiple of its step, one contiguous
/// product (the fragment-copy kernel: or any batched, strided views whose offsets and
/// strides are multiples of 8 elements), and the adapter's limits.
fn check_whole_tiles(
    gpu: &Gpu,
    copied: bool,
    tile: &CoopTile,
    shape: &PlanShape,
    sg: u32,
    sg_min: u32,
    epilogue: CoopEpilogue,
) -> Result<()> {
    let (bm, bn) = tile.tile();
    let (m, n, k) = (shape.m, shape.n, shape.k);
    let which = if copied { "fragment-copy" } else { "direct" };
    let refuse = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "matmul: the {which} coop kernel with {}x{}:{}x{}:{} ({bm} x {bn} tiles) cannot run ({m} x {n} x {k}): {why}",
            tile.subgroups.0, tile.subgroups.1, tile.frags.0, tile.frags.1, tile.bk
        )))
    };
    if !copied && !tile.valid_direct() {
        return refuse(
            "it needs 1 to 8 subgroups, 1 to 4 fragments each way and K steps of 16 or 32",
        );
    }
    if copied && !tile.valid_copied() {
        return refuse("it needs 1 to 8 subgroups, 1 to 4 fragments each way, K slices of 16, 32 or 64, and 1 to 4 slice fragments of each operand a subgroup");
    }
    let k_step = if copied { tile.bk as usize } else { 16 };
    if m % bm as usize != 0 || n % bn as usize != 0 || k % k_step != 0 {
        return refuse("M and N must be multiples of the tile and K of the K step");
    }
    if !copied && !shape.contiguous {
        return refuse("it takes one dense product from element 0 of each tensor");
    }
    if copied && !shape.contiguous && !shape.aligned {
        return refuse("a batched or strided view needs offsets, leading dimensions and batch strides that are multiples of 8 elements (16-byte-aligned fragment rows)");
    }
    let caps = gpu.caps();
    let threads = sg * tile.subgroups.0 * tile.subgroups.1;
    if threads > caps.max_compute_invocations_per_workgroup
        || epilogue.scratch_bytes(threads, sg_min) + if copied { tile.copied_bytes() } else { 0 }
            > caps.max_compute_workgroup_storage_size
    {
        return refuse("the workgroup is over the adapter's invocation or memory limits");
    }
    Ok(())
}
