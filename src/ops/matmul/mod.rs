//! Matrix products `C = op(A) @ op(B)` (+ a bias row) (+ the old C), accumulated in f32,
//! for one product or a batch of strided views.
//!
//! op is "as stored" or "transposed", read in place, so a Linear layer's forward
//! `X W^T`, input gradient `dY W` and weight gradient `dY^T X` are one dispatch each, and
//! attention's per-head products read Q, K and V straight out of a fused QKV activation.
//! Kernels (`shaders/matmul.wgsl`, `shaders/matmul_coop.wgsl`):
//! - `tiled` ([`tiled`]): portable (every adapter, every dtype, both f16 storage paths);
//!   `tiled_fast` the same for outputs of even N or f32 (`TiledTile::Fast`);
//! - `coop` and `coop_tile` ([`coop`]): cooperative matrices (16x16x16 f16 -> f32),
//!   chosen automatically for f16 operands on adapters that offer them;
//! - `coop_direct` (`shaders/matmul_coop_direct.wgsl`): cooperative matrices loaded
//!   straight from global memory, and `coop_copied` (`shaders/matmul_coop_copied.wgsl`):
//!   slices staged by cooperative-matrix loads and stores (`Auto`'s kernel for whole
//!   tiles into an f32 C without bias and for batched, strided whole tiles; the direct
//!   one for benchmarks, `MatmulTuning::coop_tile`);
//! - `rescaled+...` ([`rescale`]): bf16 operands scaled by powers of two into f16 copies
//!   and multiplied by one of those (on cooperative matrices where the adapter has them);
//! - `widened+...` ([`widen`]): f16 products into a 16-bit C (or with a bias) through an
//!   f32 scratch and an epilogue, so they run on the fragment-copy kernel's store path.
//!
//! [`plan`] picks one ([`MatmulPlan`]); [`matmul_with`] checks a [`MatmulArgs`] and builds
//! the dispatch; [`matmul`] is the rank-2 shorthand the layers use.
//! `HALFGRAD_MATMUL=tiled|coop|rescaled|widened` forces a kernel where the options say `Auto`.

/// Bindings shared by the tiled, general coop and direct coop kernels (coop narrows a and
/// b to f16; the direct kernel's coopStore epilogue narrows c to f32).
macro_rules! matmul_slots {
    ($operands:expr) => {
        matmul_slots!($operands, $crate::kernels::ANY)
    };
    ($operands:expr, $c:expr) => {
        &[
            $crate::kernels::Slot::read("a", $operands),
            $crate::kernels::Slot::read("b", $operands),
            $crate::kernels::Slot::write("c", $c),
            $crate::kernels::Slot::raw(
                "bias",
                $crate::kernels::SlotKind::F32,
                $crate::kernels::Access::Read,
            ),
            $crate::kernels::Slot::raw(
                "found_inf",
                $crate::kernels::SlotKind::Atomic,
                $crate::kernels::Access::ReadWrite,
            ),
        ]
    };
}

/// The kernels of `shaders/matmul.wgsl`: the portable tiled kernel (every adapter, every
/// operand dtype) and the general cooperative-matrix kernel (f16 operands, any output).
pub mod shader_matmul {
    use crate::kernels::{declare_kernels, ANY};
    use crate::DType;
    declare_kernels! {
        "matmul";
        /// The portable tiled kernel.
        TILED = "tiled", slots: matmul_slots!(ANY);
        /// The portable tiled kernel for outputs of even N or f32 (vec4 tiles,
        /// double-buffered).
        TILED_FAST = "tiled_fast", slots: matmul_slots!(ANY);
        /// The cooperative-matrix kernel (f16 operands, any output dtype).
        COOP = "coop", slots: matmul_slots!(&[DType::F16]), cooperative_matrix: true, needs_f16: true;
    }
}

/// Bindings of the coop tile kernels: A and B as 16-byte words, C in `$c` dtypes.
macro_rules! coop_tile_slots {
    ($c:expr) => {
        &[
            $crate::kernels::Slot::raw(
                "a",
                $crate::kernels::SlotKind::U32x4,
                $crate::kernels::Access::Read,
            ),
            $crate::kernels::Slot::raw(
                "b",
                $crate::kernels::SlotKind::U32x4,
                $crate::kernels::Access::Read,
            ),
            $crate::kernels::Slot::write("c", $c),
            $crate::kernels::Slot::raw(
                "bias",
                $crate::kernels::SlotKind::F32,
                $crate::kernels::Access::Read,
            ),
            $crate::kernels::Slot::raw(
                "found_inf",
                $crate::kernels::SlotKind::Atomic,
                $crate::kernels::Access::ReadWrite,
            ),
        ]
    };
}

/// The kernels of `shaders/matmul_coop.wgsl`: cooperative-matrix tiles with f16 operands
/// read as 16-byte words, for shapes that are whole tiles.
pub mod shader_matmul_coop {
    use crate::kernels::{declare_kernels, ANY, F32_ONLY};
    declare_kernels! {
        "matmul_coop";
        /// The cooperative-matrix tile kernel (scratch epilogue: any C, bias, accumulate).
        COOP_TILE = "tile", slots: coop_tile_slots!(ANY), cooperative_matrix: true, needs_f16: true;
        /// The same with coopStore straight into an f32 C (no bias).
        COOP_TILE_F32 = "tile_f32", slots: coop_tile_slots!(F32_ONLY), cooperative_matrix: true, needs_f16: true;
    }
}

/// The kernels of `shaders/matmul_coop_direct.wgsl`: cooperative-matrix fragments loaded
/// straight from global f16 operands (no workgroup staging), for whole tiles.
pub mod shader_matmul_coop_direct {
    use crate::kernels::{declare_kernels, F32_ONLY};
    use crate::DType;
    declare_kernels! {
        "matmul_coop_direct";
        /// The direct kernel (scratch epilogue: any C, bias, accumulate).
        COOP_DIRECT = "direct", slots: matmul_slots!(&[DType::F16]), cooperative_matrix: true, needs_f16: true;
        /// The same with coopStore straight into an f32 C (no bias).
        COOP_DIRECT_F32 = "direct_f32", slots: matmul_slots!(&[DType::F16], F32_ONLY), cooperative_matrix: true, needs_f16: true;
    }
}

/// The kernels of `shaders/matmul_coop_copied.wgsl`: whole tiles staged through
/// workgroup memory by cooperative-matrix loads and stores (no per-element copies).
pub mod shader_matmul_coop_copied {
    use crate::kernels::{declare_kernels, F32_ONLY};
    use crate::DType;
    declare_kernels! {
        "matmul_coop_copied";
        /// The fragment-copy kernel (scratch epilogue: any C, bias, accumulate).
        COOP_COPIED = "copied", slots: matmul_slots!(&[DType::F16]), cooperative_matrix: true, needs_f16: true;
        /// The same with coopStore straight into an f32 C (no bias).
        COOP_COPIED_F32 = "copied_f32", slots: matmul_slots!(&[DType::F16], F32_ONLY), cooperative_matrix: true, needs_f16: true;
    }
}

pub mod causal;
pub mod coop;
pub mod plan;
pub mod rescale;
pub mod small;
pub mod tiled;
pub mod widen;

pub use causal::Causal;
pub use coop::{CoopEpilogue, CoopTile};
pub use plan::{
    chosen_kernel, coop_tile_for, kernel_for_shape, strided_copied_tile, CoopTilePlan, CoopTiles,
    F16Product, MatmulKernel, MatmulOptions, MatmulPlan, MatmulTuning, WIDE_SCRATCH_MAX_ELEMS,
};
pub use shader_matmul::{COOP, TILED, TILED_FAST};
pub use shader_matmul_coop::{COOP_TILE, COOP_TILE_F32};
pub use shader_matmul_coop_copied::{COOP_COPIED, COOP_COPIED_F32};
pub use shader_matmul_coop_direct::{COOP_DIRECT, COOP_DIRECT_F32};
pub use small::SmallConfig;
pub use tiled::{TiledConfig, TiledTile};

use crate::flag::OverflowFlag;
use crate::kernels::{Bind, Dispatch};
use crate::{DType, Error, Gpu, Result, Tensor};
use plan::PlanShape;

/// Where one operand's matrices lie in its tensor, in elements. The default is one dense
/// matrix at element 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatrixLayout {
    /// Element offset of the first matrix (batch index (0, 0)).
    pub offset: usize,
    /// Elements between consecutive stored rows (the leading dimension, at least the
    /// stored column count); 0 means dense: the stored column count.
    pub ld: usize,
    /// Elements between consecutive outer batch indices (unused when the outer count is 1).
    pub outer_stride: usize,
    /// Elements between consecutive inner batch indices (unused when the inner count is 1).
    pub inner_stride: usize,
}

impl MatrixLayout {
    /// Matrices of `rows x cols` stored densely one after another from element 0: batch
    /// index (o, i) of an (outer, inner) batch at `(o * inner + i) * rows * cols`.
    pub fn dense_batch(rows: usize, cols: usize, inner: usize) -> MatrixLayout {
        let size = rows * cols;
        MatrixLayout {
            offset: 0,
            ld: 0,
            outer_stride: size * inner,
            inner_stride: size,
        }
    }
}

/// One (batched, strided) product `C[o, i] = op(A[o, i]) @ op(B[o, i]) (+ bias) (+ C)`
/// for every outer index o < batch.0 and inner index i < batch.1.
///
/// op(A) is (M, K): A's matrices are stored (M, K), or (K, M) when `opts.trans_a`; op(B) is
/// (K, N): B's are stored (K, N), or (N, K) when `opts.trans_b`; C's are (M, N). Each
/// operand's layout says where its matrices lie in its tensor (any shape: only the element
/// count matters). C's matrices must not overlap one another.
#[derive(Debug, Clone, Copy)]
pub struct MatmulArgs<'a> {
    /// f32, f16 or bf16.
    pub a: &'a Tensor,
    pub a_layout: MatrixLayout,
    /// f32, f16 or bf16.
    pub b: &'a Tensor,
    pub b_layout: MatrixLayout,
    /// f32, f16 or bf16 (f32 when accumulating). Two 16-bit elements share a word and a
    /// word has one writer, so a 16-bit C is either dense matrices of an even element
    /// count at even offsets and strides, one dense matrix filling its tensor, or has
    /// even N, ld, offset and strides.
    pub c: &'a Tensor,
    pub c_layout: MatrixLayout,
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// Columns of op(A), rows of op(B).
    pub k: usize,
    /// (outer, inner) batch counts; (1, 1) for one product.
    pub batch: (usize, usize),
    /// (N) f32, added to every row; unbatched products only.
    pub bias: Option<&'a Tensor>,
    /// Raised when a 16-bit store of C overflows to inf (or is NaN).
    pub found_inf: Option<&'a OverflowFlag>,
    /// Transposes, accumulate, kernel choice.
    pub opts: MatmulOptions,
    /// Which part of the product the caller uses (causal attention), so the fragment-copy
    /// kernel may skip the rest; other kernels compute everything ([`causal`]).
    pub causal: Causal,
    /// Tile shapes (defaults for everything but benchmarks and tests).
    pub tuning: MatmulTuning,
    /// The f32 scratch of a split-K product ([`split_k_scratch_shape`]: at least that many
    /// elements, any shape), e.g. one that a
    /// graph shares between the products it runs one after another; `None`: a split
    /// product allocates its own.
    pub split_scratch: Option<&'a Tensor>,
    /// The f32 scratch of a widened product ([`widened_scratch_len`]: at least that many
    /// elements, any shape), e.g. one that a graph shares between the products it runs
    /// one after another; `None`: a widened product allocates its own.
    pub wide_scratch: Option<&'a Tensor>,
}

impl<'a> MatmulArgs<'a> {
    /// An unbatched product of dense matrices at element 0 of each tensor, with no bias
    /// and default options; set the other fields with struct update syntax.
    pub fn new(
        a: &'a Tensor,
        b: &'a Tensor,
        c: &'a Tensor,
        (m, n, k): (usize, usize, usize),
    ) -> Self {
        MatmulArgs {
            a,
            a_layout: MatrixLayout::default(),
            b,
            b_layout: MatrixLayout::default(),
            c,
            c_layout: MatrixLayout::default(),
            m,
            n,
            k,
            batch: (1, 1),
            bias: None,
            found_inf: None,
            opts: MatmulOptions::default(),
            causal: Causal::None,
            tuning: MatmulTuning::default(),
            split_scratch: None,
            wide_scratch: None,
        }
    }

    /// The product of rank-2 tensors that [`matmul`] computes: (M, N, K) read from the
    /// shapes of a, b and c (checked against each other).
    pub fn matrices(
        a: &'a Tensor,
        b: &'a Tensor,
        c: &'a Tensor,
        opts: &MatmulOptions,
    ) -> Result<Self> {
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
        matrix_dims("c", c)?;
        if c.shape() != [m, n] {
            return Err(Error::shape(
                "matmul",
                format!("c of shape [{m}, {n}]"),
                format!("c of shape {:?}", c.shape()),
            ));
        }
        Ok(MatmulArgs {
            opts: *opts,
            ..MatmulArgs::new(a, b, c, (m, n, ka))
        })
    }
}

/// The uniform of the tiled, general coop and fragment-copy coop kernels (`Params` in
/// `shaders/matmul.wgsl` and `shaders/matmul_coop_copied.wgsl`; the staged and direct coop
/// tile kernels read the first four fields).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    batch_inner: u32,
    offset_a: u32,
    offset_b: u32,
    offset_c: u32,
    pad0: u32,
    outer_a: u32,
    outer_b: u32,
    outer_c: u32,
    pad1: u32,
    inner_a: u32,
    inner_b: u32,
    inner_c: u32,
    pad2: u32,
}

/// Bytes of the coop tile and direct kernels' uniform (m, n, k, flags).
const COOP_TILE_PARAMS: usize = 16;

const FLAG_BIAS: u32 = 1;
const FLAG_ACCUMULATE: u32 = 2;
const FLAG_TRANS_A: u32 = 4;
const FLAG_TRANS_B: u32 = 8;
const FLAG_STRIDED_C: u32 = 16;

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

/// One operand's checked view, as the shader's u32 fields.
#[derive(Debug, Clone, Copy)]
struct View {
    ld: u32,
    offset: u32,
    outer: u32,
    inner: u32,
    /// Offset, row stride and used batch strides are multiples of 8 elements.
    aligned8: bool,
    /// One dense matrix from element 0 that fills the whole tensor.
    dense_whole: bool,
    /// One dense matrix from element 0 (the tensor may be longer).
    dense_start: bool,
}

/// Checks that every element of `what`'s matrices (stored `rows x cols`) lies inside its
/// tensor, with overflow-safe arithmetic, and converts the layout for the shader.
fn view(
    what: &'static str,
    t: &Tensor,
    layout: &MatrixLayout,
    (rows, cols): (usize, usize),
    (outer, inner): (usize, usize),
) -> Result<View> {
    let ld = if layout.ld == 0 { cols } else { layout.ld };
    if ld < cols {
        return Err(Error::InvalidArgument(format!(
            "matmul: {what}'s leading dimension {ld} is less than its {cols} stored columns"
        )));
    }
    // Strides of a dimension of count 1 are never multiplied by more than 0.
    let outer_stride = if outer > 1 { layout.outer_stride } else { 0 };
    let inner_stride = if inner > 1 { layout.inner_stride } else { 0 };
    let row_stride = if rows > 1 { ld } else { 0 };
    let last = (outer - 1)
        .checked_mul(outer_stride)
        .and_then(|x| x.checked_add((inner - 1).checked_mul(inner_stride)?))
        .and_then(|x| x.checked_add((rows - 1).checked_mul(row_stride)?))
        .and_then(|x| x.checked_add(cols - 1))
        .and_then(|x| x.checked_add(layout.offset));
    let len = t.len();
    match last {
        Some(last) if last < len => {}
        _ => {
            let reach = last.map_or("past usize::MAX".to_string(), |l| format!("{l}"));
            return Err(Error::shape(
                "matmul",
                format!("{what}'s matrices within its {len} elements"),
                format!("{what}'s view reaching element {reach}"),
            ));
        }
    }
    // Every term is at most `last` < len <= u32::MAX (Tensor::MAX_ELEMENTS); a row stride
    // of a one-row matrix is unused and may be anything.
    let small = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    let aligned8 = [layout.offset, ld, outer_stride, inner_stride]
        .iter()
        .all(|x| x % 8 == 0);
    let dense_start = outer == 1 && inner == 1 && layout.offset == 0 && ld == cols;
    Ok(View {
        ld: small(ld),
        offset: small(layout.offset),
        outer: small(outer_stride),
        inner: small(inner_stride),
        aligned8,
        dense_whole: dense_start && rows * cols == len,
        dense_start,
    })
}

fn check_float(what: &'static str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(Error::DTypeMismatch {
            op: "matmul",
            expected: format!("{what} of f32, f16 or bf16"),
            got: t.dtype(),
        });
    }
    Ok(())
}

/// Builds the dispatches for `C = op(A) @ op(B) (+ bias) (+ C if accumulate)`: one,
/// or six for a rescaled bf16 product ([`rescale`]); run them in order.
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
) -> Result<Vec<Dispatch>> {
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
) -> Result<Vec<Dispatch>> {
    let args = MatmulArgs {
        bias,
        found_inf,
        tuning: *tuning,
        ..MatmulArgs::matrices(a, b, c, opts)?
    };
    matmul_with(gpu, &args)
}

/// The plan [`matmul_with`] would use for these arguments (checks them the same way).
pub fn plan_for(gpu: &Gpu, args: &MatmulArgs) -> Result<MatmulPlan> {
    Ok(check(gpu, args)?.0)
}

/// Checks the arguments; returns the plan and the uniform.
fn check(gpu: &Gpu, args: &MatmulArgs) -> Result<(MatmulPlan, Params)> {
    let MatmulArgs {
        a,
        b,
        c,
        m,
        n,
        k,
        batch,
        opts,
        ..
    } = *args;
    if m == 0 || n == 0 || k == 0 {
        return Err(Error::Empty {
            what: "matmul product (M, N, K)",
            shape: vec![m, n, k],
        });
    }
    if batch.0 == 0 || batch.1 == 0 {
        return Err(Error::Empty {
            what: "matmul batch (outer, inner)",
            shape: vec![batch.0, batch.1],
        });
    }
    check_float("a", a)?;
    check_float("b", b)?;
    check_float("c", c)?;
    args.causal.check((m, n, k))?;
    let batched = batch != (1, 1);
    if let Some(bias) = args.bias {
        if batched {
            return Err(Error::InvalidArgument(format!(
                "matmul: a bias row with a batch of {batch:?} products (unbatched only)"
            )));
        }
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
    let a_stored = if opts.trans_a { (k, m) } else { (m, k) };
    let b_stored = if opts.trans_b { (n, k) } else { (k, n) };
    let va = view("a", a, &args.a_layout, a_stored, batch)?;
    let vb = view("b", b, &args.b_layout, b_stored, batch)?;
    let vc = view("c", c, &args.c_layout, (m, n), batch)?;
    for (count, stride, which) in [
        (batch.0, args.c_layout.outer_stride, "outer"),
        (batch.1, args.c_layout.inner_stride, "inner"),
    ] {
        if count > 1 && stride == 0 {
            return Err(Error::InvalidArgument(format!(
                "matmul: c's {which} batch stride is 0 for {count} products (they would overwrite one another)"
            )));
        }
    }
    // Plain words (the kernels' odd-N straddling logic) need dense rows and no word
    // shared with another matrix or anything else: one matrix filling the tensor (the
    // last word's padding half is the buffer's), or matrices of an even element count
    // at even bases. Anything else is strided: its words never straddle rows, and a
    // 16-bit one must not have odd N, ld, offset or strides.
    let even_words = [vc.offset, vc.outer, vc.inner].iter().all(|x| x % 2 == 0) && (m * n) % 2 == 0;
    let strided_c = !(vc.dense_whole || (vc.ld as usize == n && even_words));
    if strided_c && c.dtype() != DType::F32 {
        let odd = [n as u32, vc.ld, vc.offset, vc.outer, vc.inner]
            .iter()
            .any(|x| x % 2 == 1);
        if odd {
            return Err(Error::InvalidArgument(format!(
                "matmul: a {} c of strided or odd-sized matrices needs even N, leading dimension, offset and batch strides (two elements share a word): M {m}, N {n}, {:?}",
                c.dtype(),
                args.c_layout
            )));
        }
    }
    let shape = PlanShape {
        m,
        n,
        k,
        direct: (n % 2 == 0 || strided_c) && va.aligned8 && vb.aligned8,
        contiguous: !batched && va.dense_start && vb.dense_start && vc.dense_whole,
        aligned: va.aligned8 && vb.aligned8 && vc.aligned8,
        f32_store: c.dtype() == DType::F32 && args.bias.is_none(),
        // A 16-bit C of even N has even ld, offset and strides too (checked above for a
        // strided one; a plain one has ld = N and even bases).
        fast_tiled: c.dtype() == DType::F32 || n % 2 == 0,
        rescalable: !batched && vc.dense_whole,
        copies_direct: n % 2 == 0 && a_stored.1 % 8 == 0 && b_stored.1 % 8 == 0,
        aligned8: va.aligned8 && vb.aligned8,
        stored_cols_8: a_stored.1 % 8 == 0 && b_stored.1 % 8 == 0,
    };
    let plan = plan::plan(gpu, (a.dtype(), b.dtype()), &shape, &opts, &args.tuning)?;
    // Only the fragment-copy kernel reads the hint (the others compute everything); the
    // rescaled and widened paths check their inner products without one.
    let causal = if matches!(plan, MatmulPlan::CoopCopied(_)) {
        args.causal.flags()
    } else {
        0
    };
    let flags = [
        (args.bias.is_some(), FLAG_BIAS),
        (opts.accumulate, FLAG_ACCUMULATE),
        (opts.trans_a, FLAG_TRANS_A),
        (opts.trans_b, FLAG_TRANS_B),
        (strided_c, FLAG_STRIDED_C),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(causal, |f, (_, bit)| f | bit);
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        flags,
        lda: va.ld,
        ldb: vb.ld,
        ldc: vc.ld,
        batch_inner: batch.1 as u32,
        offset_a: va.offset,
        offset_b: vb.offset,
        offset_c: vc.offset,
        pad0: 0,
        outer_a: va.outer,
        outer_b: vb.outer,
        outer_c: vc.outer,
        pad1: 0,
        inner_a: va.inner,
        inner_b: vb.inner,
        inner_c: vc.inner,
        pad2: 0,
    };
    Ok((plan, params))
}

/// Builds the dispatches for a (batched, strided) product, in the order they run: one,
/// or six for a rescaled bf16 product ([`rescale`]); see [`MatmulArgs`].
///
/// Typed errors: an empty product or batch (`Error::Empty`); a non-float operand, a
/// non-f32 bias, or accumulating into a 16-bit C (`Error::DTypeMismatch`); a view that
/// reaches past its tensor's end (`Error::ShapeMismatch`); a leading dimension below the
/// stored width, a bias with a batch, a zero C batch stride, a 16-bit C whose words
/// would have two writers (see [`MatmulArgs::c`]), a causal hint on a product that is not
/// square where the hint needs it ([`Causal`]), or a grid over the device's limits
/// (`Error::InvalidArgument`); a forced coop kernel the adapter lacks
/// (`Error::MissingFeature`).
pub fn matmul_with(gpu: &Gpu, args: &MatmulArgs) -> Result<Vec<Dispatch>> {
    let (plan, params) = check(gpu, args)?;
    match plan {
        MatmulPlan::Rescaled { product } => rescale::dispatches(gpu, args, product),
        MatmulPlan::Widened { chunk_rows, .. } => widen::dispatches(gpu, args, chunk_rows),
        single => {
            let split = split_k(&single, args);
            if split > 1 {
                return split_dispatches(gpu, args, single, &params, split);
            }
            Ok(vec![product_dispatch(
                gpu,
                args,
                F16Product::of(single),
                &params,
                1,
            )?])
        }
    }
}

/// Output tiles below which a split-K product splits K further (about two workgroups per
/// multiprocessor of a large GPU; WebGPU does not tell the count).
const SPLIT_TARGET_WORKGROUPS: usize = 512;
/// The shortest K range one split takes.
const SPLIT_MIN_K: usize = 512;
/// The most splits (the scratch holds this many f32 copies of C).
const SPLIT_MAX: usize = 16;

/// How many K ranges a product splits into (1: none). Only the fragment-copy kernel with
/// its store epilogue (an f32 C without bias, whole tiles) splits, and only where its
/// output tiles alone would leave most of the GPU idle: weight gradients (K = tokens,
/// a (out, in) output) run on a few dozen workgroups otherwise. H200, GPT step
/// (shakespeare-char, docs/PERFORMANCE.md): 384 x 1152 outputs over K = 16,384.
/// Unbatched products into one dense C filling its tensor only (the column sum writes
/// C as one dense matrix; A and B may be strided views) without a causal hint.
fn split_k(plan: &MatmulPlan, args: &MatmulArgs) -> usize {
    let MatmulPlan::CoopCopied(CoopTilePlan {
        tile,
        epilogue: CoopEpilogue::Store,
        ..
    }) = *plan
    else {
        return 1;
    };
    let dense_c = args.c_layout.offset == 0
        && (args.c_layout.ld == 0 || args.c_layout.ld == args.n)
        && args.c.len() == args.m * args.n;
    // A causal hint keeps its one dispatch, which honours it.
    if args.batch != (1, 1) || !dense_c || args.causal != Causal::None {
        return 1;
    }
    let (bm, bn) = tile.tile();
    let tiles = (args.m / bm as usize) * (args.n / bn as usize);
    let step = tile.bk as usize;
    let mut split = 1;
    while split < SPLIT_MAX
        && tiles * split * 2 <= SPLIT_TARGET_WORKGROUPS
        && args.k.is_multiple_of(2 * split * step)
        && args.k / (2 * split) >= SPLIT_MIN_K
    {
        split *= 2;
    }
    split
}

/// The shape of the f32 scratch a split-K product writes, (splits x M, N), or None where
/// the product does not split: a caller that runs several products one after another
/// can give them one scratch ([`MatmulArgs::split_scratch`]).
pub fn split_k_scratch_shape(gpu: &Gpu, args: &MatmulArgs) -> Result<Option<[usize; 2]>> {
    let (plan, _) = check(gpu, args)?;
    let split = split_k(&plan, args);
    Ok((split > 1).then_some([split * args.m, args.n]))
}

/// The f32 elements the scratch of a widened product holds ([`MatmulArgs::wide_scratch`]),
/// or None where the product takes another path.
pub fn widened_scratch_len(gpu: &Gpu, args: &MatmulArgs) -> Result<Option<usize>> {
    Ok(match check(gpu, args)?.0 {
        MatmulPlan::Widened { chunk_rows, .. } => Some(chunk_rows * args.n),
        _ => None,
    })
}

/// A split-K product: the K ranges into rows of an f32 scratch (one workgroup layer
/// each), then their column sum, in a fixed order, into C (added to the old C when
/// accumulating). Deterministic: the same bits every run.
fn split_dispatches(
    gpu: &Gpu,
    args: &MatmulArgs,
    plan: MatmulPlan,
    params: &Params,
    split: usize,
) -> Result<Vec<Dispatch>> {
    let scratch = &f32_scratch(
        gpu,
        "matmul split-K scratch",
        args.split_scratch,
        &[split * args.m, args.n],
    )?;
    let into_scratch = MatmulArgs {
        c: scratch,
        c_layout: MatrixLayout::default(),
        opts: MatmulOptions {
            accumulate: false,
            ..args.opts
        },
        ..*args
    };
    let mut split_params = *params;
    split_params.flags &= !FLAG_ACCUMULATE;
    let product = product_dispatch(
        gpu,
        &into_scratch,
        F16Product::of(plan),
        &split_params,
        split as u32,
    )?;
    let layers = scratch.reshape(&[split, args.m * args.n])?;
    let c = args.c.reshape(&[args.m * args.n])?;
    // Whole 16-byte words (a whole-tile product's M x N is) stream through `sum_layers`;
    // `col_sum` (a workgroup per 32 columns) ran the MLP benchmark's two (2, 4 Mi) sums
    // at 0.2 ms each on the H200.
    let accumulate = args.opts.accumulate;
    let mut out = vec![product.holding(std::slice::from_ref(scratch))];
    if (args.m * args.n).is_multiple_of(4) {
        out.push(crate::ops::reduce::sum_layers(
            gpu, &layers, &c, accumulate,
        )?);
    } else {
        out.extend(crate::ops::reduce::col_sum(
            gpu, &layers, &c, None, accumulate,
        )?);
    }
    Ok(out)
}

/// `given` seen as an f32 `shape` (its first elements: an f32 tensor of at least that
/// many, e.g. one a graph shares between products), or a scratch of the product's own
/// outside the pool. `Error::ShapeMismatch` naming `what` for a given tensor that is not
/// f32 or too short.
fn f32_scratch(
    gpu: &Gpu,
    what: &'static str,
    given: Option<&Tensor>,
    shape: &[usize],
) -> Result<Tensor> {
    let need: usize = shape.iter().product();
    match given {
        Some(t) if t.dtype() == DType::F32 && t.len() >= need => t.prefix(shape),
        Some(t) => Err(Error::shape(
            what,
            format!("at least {need} f32 elements ({shape:?})"),
            format!("{} {}", t.len(), t.dtype()),
        )),
        None => Tensor::empty_unpooled(gpu, shape, DType::F32),
    }
}

/// Buffers for unused bindings (no bias, no found_inf flag). These are the dispatch's own
/// (not pooled, so nothing else ever lands in them); the bind group keeps them alive.
fn dummy_bindings(gpu: &Gpu) -> Result<(wgpu::Buffer, wgpu::Buffer)> {
    gpu.scoped("matmul dummy bindings", || {
        let make = |label| {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        (make("matmul no bias"), make("matmul no found_inf"))
    })
}

/// The one dispatch of a single-kernel plan (checked arguments and their uniform).
fn product_dispatch(
    gpu: &Gpu,
    args: &MatmulArgs,
    kernel: F16Product,
    params: &Params,
    split: u32,
) -> Result<Dispatch> {
    let plan = kernel.plan();
    let (m, n) = (args.m, args.n);
    let (bm, bn) = plan.output_tile();
    let batches = (args.batch.0 as u64)
        .saturating_mul(args.batch.1 as u64)
        .saturating_mul(split as u64);
    let grid = [
        (n as u64).div_ceil(bn as u64),
        (m as u64).div_ceil(bm as u64),
        batches,
    ];
    let max = gpu.caps().max_compute_workgroups_per_dimension as u64;
    if grid.iter().any(|&g| g > max) {
        return Err(Error::InvalidArgument(format!(
            "matmul: a batch of {batches} ({m} x {n}) outputs needs {} x {} x {} workgroups; the device allows {max} a dimension",
            grid[0], grid[1], grid[2]
        )));
    }

    // Unused bindings still need a buffer: the dispatch's own, unpooled
    // ([`dummy_bindings`]).
    let (dummy_bias, dummy_flag) = dummy_bindings(gpu)?;
    let (def, bind_a, bind_b, params_bytes) = match kernel {
        F16Product::CoopTile(CoopTilePlan { epilogue, .. }) => (
            if epilogue == CoopEpilogue::Store {
                &COOP_TILE_F32
            } else {
                &COOP_TILE
            },
            Bind::Buffer(args.a.buffer()),
            Bind::Buffer(args.b.buffer()),
            &bytemuck::bytes_of(params)[..COOP_TILE_PARAMS],
        ),
        F16Product::CoopDirect(CoopTilePlan { epilogue, .. }) => (
            if epilogue == CoopEpilogue::Store {
                &COOP_DIRECT_F32
            } else {
                &COOP_DIRECT
            },
            Bind::Tensor(args.a),
            Bind::Tensor(args.b),
            &bytemuck::bytes_of(params)[..COOP_TILE_PARAMS],
        ),
        // Offsets, leading dimensions and batch strides: the whole uniform.
        F16Product::CoopCopied(CoopTilePlan { epilogue, .. }) => (
            if epilogue == CoopEpilogue::Store {
                &COOP_COPIED_F32
            } else {
                &COOP_COPIED
            },
            Bind::Tensor(args.a),
            Bind::Tensor(args.b),
            bytemuck::bytes_of(params),
        ),
        F16Product::Coop { .. } => (
            &COOP,
            Bind::Tensor(args.a),
            Bind::Tensor(args.b),
            bytemuck::bytes_of(params),
        ),
        F16Product::Small(_) => (
            &small::SMALL,
            Bind::Buffer(args.a.buffer()),
            Bind::Buffer(args.b.buffer()),
            bytemuck::bytes_of(params),
        ),
        F16Product::Tiled(t) => (
            if t.fast { &TILED_FAST } else { &TILED },
            Bind::Tensor(args.a),
            Bind::Tensor(args.b),
            bytemuck::bytes_of(params),
        ),
    };
    let mut overrides = plan.overrides(&args.opts);
    if split > 1 {
        overrides.push(("SPLIT_K", split as u64));
    }
    gpu.dispatch(
        def,
        &[
            bind_a,
            bind_b,
            Bind::Tensor(args.c),
            Bind::Buffer(args.bias.map_or(&dummy_bias, |t| t.buffer())),
            Bind::Buffer(args.found_inf.map_or(&dummy_flag, |f| f.buffer())),
        ],
        params_bytes,
        &overrides,
        [grid[0] as u32, grid[1] as u32, grid[2] as u32],
    )
}
