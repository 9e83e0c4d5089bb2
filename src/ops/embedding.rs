//! Token + learned position embedding (GPT-2's `wte` and `wpe`), forward and a
//! deterministic backward without float atomics. Everything is f32: the tables are the
//! master weights and the residual stream they start is f32.
//!
//! Backward cost: `dwte` reads every row of `dx` once (each position belongs to exactly
//! one token) and writes `V x C`: O((N + V) C) with N = B * T. A token used k times is
//! summed serially by one invocation per channel (k reads); with byte-level text the
//! most common byte (space, 19% of the KJV text) sets the critical path at ~N/5 reads.
//! `dwpe` reads `dx` once and writes `T_max x C`. The host builds the token index
//! ([`token_index`], a stable counting sort: O(N + V)) when it writes a batch.

use crate::kernels::{declare_kernels, Access, Bind, Dispatch, Slot, SlotKind, F32_ONLY};
use crate::{DType, Error, Gpu, Result, Tensor};

declare_kernels! {
    "embedding";
    /// x = wte[token] + wpe[position].
    FORWARD = "forward",
        slots: &[
            Slot::raw("tokens", SlotKind::U32, Access::Read),
            Slot::read("wte", F32_ONLY),
            Slot::read("wpe", F32_ONLY),
            Slot::write("x", F32_ONLY),
        ];
    /// dwte: each vocabulary row gathers its positions in ascending order.
    BACKWARD_TOKENS = "backward_tokens",
        slots: &[
            Slot::raw("offsets", SlotKind::U32, Access::Read),
            Slot::raw("positions", SlotKind::U32, Access::Read),
            Slot::read("dx", F32_ONLY),
            Slot::write("dwte", F32_ONLY),
        ];
    /// dwpe: each position sums its batch rows in order.
    BACKWARD_POSITIONS = "backward_positions",
        slots: &[Slot::read("dx", F32_ONLY), Slot::write("dwpe", F32_ONLY)];
}

const WG: u32 = 256;
/// Channels per workgroup of `backward_tokens` (`CHANNEL_BLOCK` in the shader).
const CHANNEL_BLOCK: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    block: u32,
    channels: u32,
    vocab: u32,
    table_rows: u32,
    accumulate: u32,
}

/// The positions that used each token, for the deterministic `dwte`: a stable counting
/// sort of `tokens`. Returns `(offsets, positions)`: `offsets` has `vocab + 1` entries and
/// token `v`'s positions are `positions[offsets[v] .. offsets[v + 1]]`, ascending.
/// A token `>= vocab` is an [`Error::LabelOutOfRange`] (tokens are the model's classes).
// tokens: (N) u32 -> offsets: (V + 1) u32, positions: (N) u32
pub fn token_index(tokens: &[u32], vocab: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let mut offsets = Vec::new();
    let mut positions = Vec::new();
    token_index_into(tokens, vocab, &mut offsets, &mut positions)?;
    Ok((offsets, positions))
}

/// [`token_index`] into the caller's vectors (reusing their capacity).
pub fn token_index_into(
    tokens: &[u32],
    vocab: usize,
    offsets: &mut Vec<u32>,
    positions: &mut Vec<u32>,
) -> Result<()> {
    check_tokens(tokens, vocab)?;
    if u32::try_from(tokens.len()).is_err() {
        return Err(Error::InvalidArgument(format!(
            "token index: {} positions exceed u32",
            tokens.len()
        )));
    }
    offsets.clear();
    offsets.resize(vocab + 1, 0);
    for &t in tokens {
        offsets[t as usize + 1] += 1;
    }
    for v in 0..vocab {
        offsets[v + 1] += offsets[v];
    }
    positions.clear();
    positions.resize(tokens.len(), 0);
    // `next[v]` is where token v's next position goes; walking p upwards keeps each
    // token's positions ascending (the summation order of backward).
    let mut next = offsets[..vocab].to_vec();
    for (p, &t) in tokens.iter().enumerate() {
        let slot = &mut next[t as usize];
        positions[*slot as usize] = p as u32;
        *slot += 1;
    }
    Ok(())
}

/// Checks tokens against the vocabulary size on the host, the one place an out-of-range
/// token is caught (the forward kernel would only write a NaN row).
pub fn check_tokens(tokens: &[u32], vocab: usize) -> Result<()> {
    match tokens.iter().position(|&t| t as usize >= vocab) {
        Some(index) => Err(Error::LabelOutOfRange {
            index,
            label: tokens[index],
            classes: vocab,
        }),
        None => Ok(()),
    }
}

fn raw_u32_buffer(gpu: &Gpu, label: &'static str, len: usize) -> Result<wgpu::Buffer> {
    let bytes = (len as u64 * 4).div_ceil(16).max(1) * 16;
    gpu.scoped(label, || {
        gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    })
}

/// The GPU copy of a batch's [`token_index`], read by [`backward`]. Made once per model
/// (`vocab`, `rows` = B * T fixed); [`TokenIndex::write`] refills it for every batch.
#[derive(Debug)]
pub struct TokenIndex {
    // offsets: (V + 1) u32
    offsets: wgpu::Buffer,
    // positions: (N) u32
    positions: wgpu::Buffer,
    vocab: usize,
    rows: usize,
}

impl TokenIndex {
    pub fn new(gpu: &Gpu, vocab: usize, rows: usize) -> Result<TokenIndex> {
        if vocab == 0 || rows == 0 {
            return Err(Error::InvalidArgument(format!(
                "token index needs vocab >= 1 and rows >= 1 (got {vocab}, {rows})"
            )));
        }
        if u32::try_from(vocab + 1).is_err() || u32::try_from(rows).is_err() {
            return Err(Error::InvalidArgument(format!(
                "token index: vocab {vocab} or rows {rows} exceeds u32"
            )));
        }
        Ok(TokenIndex {
            offsets: raw_u32_buffer(gpu, "halfgrad token offsets", vocab + 1)?,
            positions: raw_u32_buffer(gpu, "halfgrad token positions", rows)?,
            vocab,
            rows,
        })
    }

    /// Builds the index of one batch's tokens on the host and uploads it (queued; ordered
    /// before the next submission). Checks length and range first: a bad batch leaves the
    /// previous index in place and returns a typed error.
    // tokens: (N) u32, each < V
    pub fn write(&self, gpu: &Gpu, tokens: &[u32]) -> Result<()> {
        if tokens.len() != self.rows {
            return Err(Error::DataLength {
                shape: vec![self.rows],
                expected: self.rows,
                got: tokens.len(),
            });
        }
        let (offsets, positions) = token_index(tokens, self.vocab)?;
        gpu.check()?;
        gpu.queue()
            .write_buffer(&self.offsets, 0, bytemuck::cast_slice(&offsets));
        gpu.queue()
            .write_buffer(&self.positions, 0, bytemuck::cast_slice(&positions));
        Ok(())
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }
    /// N = B * T positions per batch.
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn offsets(&self) -> &wgpu::Buffer {
        &self.offsets
    }
    pub fn positions(&self) -> &wgpu::Buffer {
        &self.positions
    }
}

fn u32_of(op: &'static str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::InvalidArgument(format!("{op}: {what} {n} exceeds u32")))
}

fn expect_f32(op: &'static str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape() != shape {
        return Err(Error::shape(
            op,
            format!("{shape:?}"),
            format!("{:?}", t.shape()),
        ));
    }
    if t.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch {
            op,
            expected: "f32".into(),
            got: t.dtype(),
        });
    }
    Ok(())
}

/// The (N, C, T_max) of x / dx, the tables and the block size, checked: x is (N, C) with
/// N a multiple of `block`, wpe has at least `block` rows.
fn dims(op: &'static str, x: &Tensor, wpe_rows: usize, block: usize) -> Result<(u32, u32)> {
    let (n, c) = match x.shape() {
        [n, c] => (*n, *c),
        other => return Err(Error::shape(op, "(N, C)", format!("{other:?}"))),
    };
    if block == 0 || !n.is_multiple_of(block) {
        return Err(Error::InvalidArgument(format!(
            "{op}: {n} positions are not a whole number of blocks of {block}"
        )));
    }
    if block > wpe_rows {
        return Err(Error::InvalidArgument(format!(
            "{op}: block size {block} exceeds the {wpe_rows} rows of the position table"
        )));
    }
    Ok((u32_of(op, "positions", n)?, u32_of(op, "channels", c)?))
}

/// Forward: `x[p] = wte[tokens[p]] + wpe[p % block]` for p in 0..N.
// tokens: (N) u32, each < V (check with `check_tokens`)
// wte: (V, C) f32
// wpe: (T_max, C) f32, T_max >= block
// x: (N, C) f32, written; N = B * block
pub fn forward(
    gpu: &Gpu,
    tokens: &Tensor,
    block: usize,
    wte: &Tensor,
    wpe: &Tensor,
    x: &Tensor,
) -> Result<Dispatch> {
    let op = "embedding forward";
    let (vocab, t_max) = (table_rows(op, wte)?, table_rows(op, wpe)?);
    let (n, c) = dims(op, x, t_max, block)?;
    expect_f32(op, x, &[n as usize, c as usize])?;
    expect_f32(op, wte, &[vocab, c as usize])?;
    expect_f32(op, wpe, &[t_max, c as usize])?;
    super::expect_u32(op, "tokens", tokens, n as usize)?;
    let p = Params {
        rows: n,
        block: block as u32,
        channels: c,
        vocab: u32_of(op, "vocab", vocab)?,
        table_rows: 0,
        accumulate: 0,
    };
    gpu.dispatch(
        &FORWARD,
        &[
            Bind::Buffer(tokens.buffer()),
            Bind::Tensor(wte),
            Bind::Tensor(wpe),
            Bind::Tensor(x),
        ],
        bytemuck::bytes_of(&p),
        &[("WG", WG as u64)],
        // One octet an invocation where C is a multiple of 8, else one element.
        gpu.grid_1d((n as u64 * c as u64) / if c % 8 == 0 { 8 } else { 1 }, WG),
    )
}

fn table_rows(op: &'static str, t: &Tensor) -> Result<usize> {
    match t.shape() {
        [r, _] => Ok(*r),
        other => Err(Error::shape(op, "(rows, C)", format!("{other:?}"))),
    }
}

/// Backward: two dispatches, `dwte` from the batch's [`TokenIndex`] then `dwpe`. Each
/// overwrites its gradient or, with its `accumulate_*` flag, adds into it (the tied LM
/// head writes `dwte` first). Deterministic: same inputs, same bits.
// index: the TokenIndex of the batch's tokens (V, N as below)
// dx: (N, C) f32, the gradient of x; N = B * block
// dwte: (V, C) f32, written or accumulated
// dwpe: (T_max, C) f32, written or accumulated (rows >= block get 0 / keep their value)
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    index: &TokenIndex,
    block: usize,
    dx: &Tensor,
    dwte: &Tensor,
    accumulate_wte: bool,
    dwpe: &Tensor,
    accumulate_wpe: bool,
) -> Result<[Dispatch; 2]> {
    let op = "embedding backward";
    let t_max = table_rows(op, dwpe)?;
    let (n, c) = dims(op, dx, t_max, block)?;
    expect_f32(op, dx, &[n as usize, c as usize])?;
    expect_f32(op, dwte, &[index.vocab(), c as usize])?;
    expect_f32(op, dwpe, &[t_max, c as usize])?;
    if index.rows() != n as usize {
        return Err(Error::shape(
            op,
            format!("a token index of {n} positions"),
            format!("{} positions", index.rows()),
        ));
    }
    let vocab = u32_of(op, "vocab", index.vocab())?;
    let base = Params {
        rows: n,
        block: block as u32,
        channels: c,
        vocab,
        table_rows: 0,
        accumulate: accumulate_wte as u32,
    };
    let groups = vocab as u64 * c.div_ceil(CHANNEL_BLOCK) as u64;
    let tokens = gpu.dispatch(
        &BACKWARD_TOKENS,
        &[
            Bind::Buffer(index.offsets()),
            Bind::Buffer(index.positions()),
            Bind::Tensor(dx),
            Bind::Tensor(dwte),
        ],
        bytemuck::bytes_of(&base),
        &[],
        gpu.grid_1d(groups, 1),
    )?;
    let p = Params {
        table_rows: u32_of(op, "position table rows", t_max)?,
        accumulate: accumulate_wpe as u32,
        ..base
    };
    let positions = gpu.dispatch(
        &BACKWARD_POSITIONS,
        &[Bind::Tensor(dx), Bind::Tensor(dwpe)],
        bytemuck::bytes_of(&p),
        &[("WG", WG as u64)],
        gpu.grid_1d(t_max as u64 * c as u64, WG),
    )?;
    Ok([tokens, positions])
}
