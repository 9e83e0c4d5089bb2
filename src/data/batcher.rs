//! Seeded, resumable mini-batch order.
//!
//! The batcher sees the data set as an endless stream of sample indices: epoch 0's
//! permutation, then epoch 1's, and so on. Batch `k` is stream positions
//! `k*batch .. (k+1)*batch`, so every batch has exactly `batch` samples, every sample
//! appears once per epoch, and a batch may straddle two epochs. Epoch `e`'s permutation
//! depends only on `(seed, e)`, so the whole stream is a pure function of
//! `(len, seed)` and a run resumed at any position continues it exactly.

use super::Dataset;
use crate::rng::SplitMix64;
use crate::{Error, Result};

/// Everything needed to recreate a [`Batcher`] at its current position; store it in a
/// checkpoint's metadata to resume training on the same batch sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BatcherState {
    /// Number of samples in the data set.
    pub len: usize,
    /// Samples per batch.
    pub batch: usize,
    /// Seed of the shuffle.
    pub seed: u64,
    /// Samples handed out so far (stream position of the next sample).
    pub position: u64,
}

fn check_position(position: u64) -> Result<()> {
    if position > Batcher::MAX_POSITION {
        return Err(Error::InvalidArgument(format!(
            "batcher position {position} is past the largest accepted position {}",
            Batcher::MAX_POSITION
        )));
    }
    Ok(())
}

/// Shuffled mini-batches of sample indices from a seed. See the module docs for the
/// exact sequence.
#[derive(Debug, Clone)]
pub struct Batcher {
    len: usize,
    batch: usize,
    seed: u64,
    /// Stream position of the next sample.
    position: u64,
    /// The permutation of epoch `perm_epoch` (`None` until first needed).
    perm: Vec<usize>,
    perm_epoch: Option<u64>,
    /// The indices of the last batch handed out.
    indices: Vec<usize>,
}

impl Batcher {
    /// The furthest stream position a batcher starts from (2^62 samples: centuries of
    /// training), so that counting on from it can never overflow. A saved state past it
    /// is damaged, not old.
    pub const MAX_POSITION: u64 = 1 << 62;

    /// A batcher at step 0 over `len` samples, `batch` at a time (`1 <= batch <= len`).
    pub fn new(len: usize, batch: usize, seed: u64) -> Result<Batcher> {
        Batcher::from_state(BatcherState {
            len,
            batch,
            seed,
            position: 0,
        })
    }

    /// A batcher that continues exactly where the one that produced `state` was.
    pub fn from_state(state: BatcherState) -> Result<Batcher> {
        let BatcherState {
            len,
            batch,
            seed,
            position,
        } = state;
        if len == 0 || batch == 0 || batch > len {
            return Err(Error::InvalidArgument(format!(
                "batcher needs 1 <= batch <= len (got batch {batch}, len {len})"
            )));
        }
        check_position(position)?;
        Ok(Batcher {
            len,
            batch,
            seed,
            position,
            // Allocated on first use: a state read from a damaged file must not be able
            // to ask for an absurd allocation before `next_batch` checks its length.
            perm: Vec::new(),
            perm_epoch: None,
            indices: Vec::new(),
        })
    }

    /// The current position, for saving.
    pub fn state(&self) -> BatcherState {
        BatcherState {
            len: self.len,
            batch: self.batch,
            seed: self.seed,
            position: self.position,
        }
    }

    /// Moves to the start of batch `step` (0-based): the next batch is the one a fresh
    /// batcher returns after `step` calls. Works backwards as well as forwards.
    pub fn skip_to(&mut self, step: u64) -> Result<()> {
        let position = step.checked_mul(self.batch as u64).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "batcher step {step} x batch {} overflows",
                self.batch
            ))
        })?;
        check_position(position)?;
        self.position = position;
        Ok(())
    }

    /// Number of samples in the data set.
    pub fn dataset_len(&self) -> usize {
        self.len
    }

    /// Samples per batch.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// The shuffle seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Samples handed out so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whole batches handed out so far (the step the next batch belongs to).
    pub fn step(&self) -> u64 {
        self.position / self.batch as u64
    }

    /// The epoch the next sample comes from.
    pub fn epoch(&self) -> u64 {
        self.position / self.len as u64
    }

    /// Index of the next sample within its epoch's permutation.
    pub fn index_in_epoch(&self) -> usize {
        (self.position % self.len as u64) as usize
    }

    /// The order in which epoch `epoch` visits the samples `0..len` for `seed`.
    pub fn epoch_permutation(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
        let mut perm: Vec<usize> = (0..len).collect();
        Self::epoch_rng(seed, epoch).shuffle(&mut perm);
        perm
    }

    /// Independent generator per (seed, epoch), so any epoch can be made directly.
    fn epoch_rng(seed: u64, epoch: u64) -> SplitMix64 {
        SplitMix64::new(SplitMix64::mix(seed) ^ SplitMix64::mix(epoch ^ 0xD1B5_4A32_D192_ED03))
    }

    /// The sample indices of the next batch (`batch` of them); advances by one step.
    pub fn next_indices(&mut self) -> &[usize] {
        self.indices.clear();
        for _ in 0..self.batch {
            let epoch = self.epoch();
            if self.perm_epoch != Some(epoch) {
                self.perm.clear();
                self.perm.extend(0..self.len);
                Self::epoch_rng(self.seed, epoch).shuffle(&mut self.perm);
                self.perm_epoch = Some(epoch);
            }
            self.indices.push(self.perm[self.index_in_epoch()]);
            self.position += 1;
        }
        &self.indices
    }

    /// Fills `x: (batch, features)` and `y: (batch,)` with the next batch of `data`,
    /// reusing their capacity, and advances by one step. `data.len()` must be the length
    /// the batcher was made for.
    pub fn next_batch<D: Dataset + ?Sized>(
        &mut self,
        data: &D,
        x: &mut Vec<f32>,
        y: &mut Vec<u32>,
    ) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::InvalidArgument(format!(
                "batcher was made for {} samples but the data set has {}",
                self.len,
                data.len()
            )));
        }
        self.next_indices();
        data.gather(&self.indices, x, y)
    }
}
