//! Byte-level text for the GPT: a corpus of bytes (tokens 0..256), a fixed train /
//! validation split, seeded random training windows and the evaluation windows.
//!
//! - Split: train = the first `len * 9 / 10` bytes, validation = the rest (the last 10%).
//! - Training batch `k` of a [`TextBatcher`]: `B` windows of `T + 1` bytes at starts drawn
//!   uniformly from the split by a SplitMix64 generator made from `(seed, k)`; inputs are
//!   the first `T` bytes of each window and targets the next `T`. A batch is a pure
//!   function of `(seed, k)`, so saving `(seed, step)` resumes bit-exactly.
//! - Evaluation window `i` of a split: inputs `bytes[i*T .. i*T + T]`, targets
//!   `bytes[i*T + 1 .. i*T + T + 1]`, for every `i` with `i*T + T + 1 <= len`
//!   (non-overlapping inputs that cover the split once).
//!
//! The shipped corpus is the King James Bible (data/kjv.txt, see data/README.md),
//! compiled in on native targets; on wasm32 the page fetches it and calls
//! [`TextData::from_bytes`].

use super::rng::SplitMix64;
use crate::{Error, Result};
use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;

/// The shipped corpus (4,298,239 bytes, 73 distinct). Native only: the wasm32 build
/// fetches it instead of carrying it in the module.
#[cfg(not(target_arch = "wasm32"))]
pub const KJV: &[u8] = include_bytes!("../../data/kjv.txt");

/// Which part of a [`TextData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The first 90% of the bytes.
    Train,
    /// The last 10% of the bytes.
    Validation,
}

/// A text as bytes with a block size (the context length T), split 90 / 10.
#[derive(Debug, Clone, PartialEq)]
pub struct TextData {
    name: String,
    bytes: Cow<'static, [u8]>,
    block: usize,
    /// Start of the validation split: `len * 9 / 10`.
    split_at: usize,
}

impl TextData {
    /// The largest text accepted (1 GiB): it is held in host memory whole.
    pub const MAX_BYTES: usize = 1 << 30;

    /// Wraps `bytes` (named `name` in messages) for context length `block`. Each split
    /// must hold at least one window of `block + 1` bytes.
    ///
    /// Errors: `block == 0` or a split shorter than `block + 1` -> [`Error::InvalidArgument`];
    /// no bytes -> [`Error::Empty`]; more than [`TextData::MAX_BYTES`] -> [`Error::TooLarge`].
    pub fn from_bytes(
        name: impl Into<String>,
        bytes: impl Into<Cow<'static, [u8]>>,
        block: usize,
    ) -> Result<TextData> {
        let name = name.into();
        let bytes = bytes.into();
        let len = bytes.len();
        if block == 0 {
            return Err(Error::InvalidArgument(format!(
                "{name}: the block size must be at least 1"
            )));
        }
        if len == 0 {
            return Err(Error::Empty {
                what: "text",
                shape: vec![0],
            });
        }
        if len > Self::MAX_BYTES {
            return Err(Error::TooLarge {
                what: "text",
                bytes: len as u64,
                limit_name: "TextData::MAX_BYTES",
                limit: Self::MAX_BYTES as u64,
            });
        }
        let split_at = train_len(len);
        let shortest = split_at.min(len - split_at);
        if shortest < block + 1 {
            return Err(Error::InvalidArgument(format!(
                "{name}: {len} bytes is too short for block {block}: each split (train = first \
                 90%, validation = last 10%) needs at least block + 1 = {} bytes, so the text \
                 needs at least {} bytes",
                block + 1,
                min_len(block)
            )));
        }
        Ok(TextData {
            name,
            bytes,
            block,
            split_at,
        })
    }

    /// Reads a file's bytes. Every failure is an [`Error::Io`] naming the file: missing or
    /// unreadable, empty, too short for `block` (see [`TextData::from_bytes`]), larger
    /// than [`TextData::MAX_BYTES`] (checked before reading).
    pub fn load(path: impl AsRef<Path>, block: usize) -> Result<TextData> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let io = |message: String| Error::Io {
            path: shown.clone(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| io(format!("reading text: {e}")))?;
        if meta.len() > Self::MAX_BYTES as u64 {
            return Err(io(format!(
                "{} bytes is larger than the {} bytes a text may have",
                meta.len(),
                Self::MAX_BYTES
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| io(format!("reading text: {e}")))?;
        if bytes.is_empty() {
            return Err(io("the file is empty".into()));
        }
        TextData::from_bytes(shown.clone(), bytes, block).map_err(|e| io(e.to_string()))
    }

    /// The shipped King James Bible ([`KJV`]) with context length `block`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn kjv(block: usize) -> Result<TextData> {
        TextData::from_bytes("data/kjv.txt (embedded)", KJV, block)
    }

    /// The name used in messages (the path, or what the caller called it).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Every byte.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Never true: an empty text is refused.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The context length T.
    pub fn block(&self) -> usize {
        self.block
    }
    /// Where the validation split starts (`len * 9 / 10`).
    pub fn split_at(&self) -> usize {
        self.split_at
    }

    /// The bytes of one split.
    pub fn split(&self, split: Split) -> &[u8] {
        match split {
            Split::Train => &self.bytes[..self.split_at],
            Split::Validation => &self.bytes[self.split_at..],
        }
    }

    /// The number of evaluation windows of a split: `(len - 1) / T` (see the module docs).
    pub fn eval_window_count(&self, split: Split) -> usize {
        eval_window_count(self.split(split).len(), self.block)
    }

    /// Fills `inputs` and `targets` (`(range.len(), T)` each, row-major, as u32 tokens)
    /// with the evaluation windows `range` of a split, reusing their capacity.
    /// A window past [`TextData::eval_window_count`] is an [`Error::InvalidArgument`].
    pub fn eval_windows(
        &self,
        split: Split,
        range: Range<usize>,
        inputs: &mut Vec<u32>,
        targets: &mut Vec<u32>,
    ) -> Result<()> {
        let count = self.eval_window_count(split);
        if range.start > range.end || range.end > count {
            return Err(Error::InvalidArgument(format!(
                "{}: evaluation windows {range:?} are outside the {count} windows of the {split:?} split",
                self.name
            )));
        }
        let bytes = self.split(split);
        let t = self.block;
        inputs.clear();
        targets.clear();
        for i in range {
            push_window(bytes, i * t, t, inputs, targets);
        }
        Ok(())
    }
}

/// The train split's length for a text of `len` bytes: `floor(0.9 len)`, in integers.
fn train_len(len: usize) -> usize {
    (len as u64 * 9 / 10) as usize
}

/// The shortest text whose splits both hold `block + 1` bytes.
fn min_len(block: usize) -> usize {
    // validation = ceil(len / 10) >= block + 1  <=>  len >= 10 * block + 1; the train
    // split (>= 9x validation - 9) is then long enough too.
    let mut len = 10 * block + 1;
    while train_len(len).min(len - train_len(len)) < block + 1 {
        len += 1;
    }
    len
}

/// Evaluation windows of `len` bytes with context `block`: every `i` with
/// `i*T + T + 1 <= len`.
pub fn eval_window_count(len: usize, block: usize) -> usize {
    if block == 0 || len < block + 1 {
        0
    } else {
        (len - 1) / block
    }
}

/// Appends the window at `start`: inputs `bytes[start .. start+T]`, targets one later.
fn push_window(
    bytes: &[u8],
    start: usize,
    t: usize,
    inputs: &mut Vec<u32>,
    targets: &mut Vec<u32>,
) {
    inputs.extend(bytes[start..start + t].iter().map(|&b| u32::from(b)));
    targets.extend(
        bytes[start + 1..start + t + 1]
            .iter()
            .map(|&b| u32::from(b)),
    );
}

/// Everything needed to recreate a [`TextBatcher`] at its position: store it with a
/// checkpoint to resume on the same batch sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TextBatcherState {
    /// Seed of the window draws.
    pub seed: u64,
    /// Batches handed out so far (the index of the next batch).
    pub step: u64,
    /// Windows per batch (B).
    pub batch: usize,
}

/// Seeded random training windows; batch `k` depends only on `(seed, k)` and the split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextBatcher {
    state: TextBatcherState,
}

impl TextBatcher {
    /// A batcher at step 0 drawing `batch` windows per batch.
    pub fn new(batch: usize, seed: u64) -> Result<TextBatcher> {
        TextBatcher::from_state(TextBatcherState {
            seed,
            step: 0,
            batch,
        })
    }

    /// A batcher that continues exactly where the one that produced `state` was.
    pub fn from_state(state: TextBatcherState) -> Result<TextBatcher> {
        if state.batch == 0 {
            return Err(Error::InvalidArgument(
                "a text batch needs at least one window".into(),
            ));
        }
        Ok(TextBatcher { state })
    }

    /// The current position, for saving.
    pub fn state(&self) -> TextBatcherState {
        self.state
    }

    /// The index of the next batch.
    pub fn step(&self) -> u64 {
        self.state.step
    }

    /// Moves to batch `step` (forwards or backwards).
    pub fn skip_to(&mut self, step: u64) {
        self.state.step = step;
    }

    /// Fills `inputs` and `targets` (`(B, T)` each, row-major u32 tokens) with the next
    /// batch of windows from `split` of `data`, and advances one step.
    pub fn next_batch(
        &mut self,
        data: &TextData,
        split: Split,
        inputs: &mut Vec<u32>,
        targets: &mut Vec<u32>,
    ) -> Result<()> {
        Self::batch_at(self.state, data, split, inputs, targets)?;
        self.state.step += 1;
        Ok(())
    }

    /// The batch a batcher in `state` hands out next, without advancing anything.
    pub fn batch_at(
        state: TextBatcherState,
        data: &TextData,
        split: Split,
        inputs: &mut Vec<u32>,
        targets: &mut Vec<u32>,
    ) -> Result<()> {
        let bytes = data.split(split);
        let t = data.block();
        // Checked by TextData::from_bytes; kept so a hand-made state cannot panic.
        if bytes.len() < t + 1 {
            return Err(Error::InvalidArgument(format!(
                "{}: the {split:?} split has {} bytes, fewer than block + 1 = {}",
                data.name(),
                bytes.len(),
                t + 1
            )));
        }
        let starts = (bytes.len() - t) as u64; // windows start at 0 ..= len - T - 1
        let mut rng = Self::batch_rng(state.seed, state.step, split);
        inputs.clear();
        targets.clear();
        for _ in 0..state.batch {
            let start = rng.below(starts) as usize;
            push_window(bytes, start, t, inputs, targets);
        }
        Ok(())
    }

    /// An independent generator per (seed, step, split), so any batch can be made
    /// directly and train / validation draws never share a stream.
    fn batch_rng(seed: u64, step: u64, split: Split) -> SplitMix64 {
        let lane = match split {
            Split::Train => 0x7E47_0000_0000_0001,
            Split::Validation => 0x7E47_0000_0000_0002,
        };
        SplitMix64::new(
            SplitMix64::mix(seed ^ lane) ^ SplitMix64::mix(step ^ 0xA076_1D64_78BD_642F),
        )
    }
}
