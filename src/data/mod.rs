//! Data sets and batching.
//!
//! A data set is a table of fixed-width f32 feature rows with a class label each
//! ([`Dataset`]); [`InMemory`] is the owned implementation every loader returns.
//! [`Batcher`] turns a data set length into an endless, seeded, resumable stream of
//! shuffled mini-batches. [`Digits`] is the embedded UCI 8x8 handwritten digits set.
//!
//! To add a data set: embed or load it, build an [`InMemory`] (or implement [`Dataset`]
//! for a type of your own), document its split, and test sizes and class counts as
//! tests/data.rs does for digits.

mod batcher;
pub mod csv;
mod digits;
mod rng;
pub mod text;

pub use batcher::{Batcher, BatcherState};
pub use csv::{CsvData, CsvMeta, CsvOptions, CsvTable};
pub use digits::Digits;
pub use rng::SplitMix64;

use crate::{Error, Result};

/// A classification data set: `len()` samples, each `features()` f32 values and one
/// label in `0..classes()`.
pub trait Dataset {
    /// Number of samples.
    fn len(&self) -> usize;

    /// True when there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per sample (64 for 8x8 digits).
    fn features(&self) -> usize;

    /// Number of classes; every label is below it.
    fn classes(&self) -> usize;

    /// Sample `i`: its `features()` values and its label.
    ///
    /// # Panics
    /// When `i >= len()`, like slice indexing. [`Dataset::gather`] checks instead.
    fn get(&self, i: usize) -> (&[f32], u32);

    /// Replaces the contents of `x` with the samples at `indices` (row after row,
    /// `x: (indices.len(), features())`) and of `y` with their labels
    /// (`y: (indices.len(),)`). Reuses the vectors' capacity.
    ///
    /// Errors with [`Error::InvalidArgument`] when an index is out of range (then `x`
    /// and `y` hold an unspecified prefix).
    fn gather(&self, indices: &[usize], x: &mut Vec<f32>, y: &mut Vec<u32>) -> Result<()> {
        x.clear();
        y.clear();
        x.reserve(indices.len() * self.features());
        y.reserve(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(Error::InvalidArgument(format!(
                    "sample index {i} is out of range for a data set of {} samples",
                    self.len()
                )));
            }
            let (features, label) = self.get(i);
            x.extend_from_slice(features);
            y.push(label);
        }
        Ok(())
    }

    /// How many samples each class has (`counts[c]` for class `c`).
    fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes()];
        for i in 0..self.len() {
            let label = self.get(i).1 as usize;
            if let Some(c) = counts.get_mut(label) {
                *c += 1;
            }
        }
        counts
    }
}

/// An owned data set held in host memory: inputs `(len, features)` row-major f32 and
/// labels `(len,)` u32.
#[derive(Debug, Clone, PartialEq)]
pub struct InMemory {
    inputs: Vec<f32>,
    labels: Vec<u32>,
    features: usize,
    classes: usize,
}

impl InMemory {
    /// Checks and wraps the arrays.
    // inputs: (N, features) f32 row-major; labels: (N,) u32, each < classes
    pub fn new(
        inputs: Vec<f32>,
        labels: Vec<u32>,
        features: usize,
        classes: usize,
    ) -> Result<InMemory> {
        if features == 0 || classes == 0 {
            return Err(Error::InvalidArgument(format!(
                "a data set needs at least one feature and one class (got {features} features, {classes} classes)"
            )));
        }
        let expected = labels.len().checked_mul(features).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} samples x {features} features overflows",
                labels.len()
            ))
        })?;
        if inputs.len() != expected {
            return Err(Error::DataLength {
                shape: vec![labels.len(), features],
                expected,
                got: inputs.len(),
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(Error::LabelOutOfRange {
                index,
                label,
                classes,
            });
        }
        Ok(InMemory {
            inputs,
            labels,
            features,
            classes,
        })
    }

    /// All inputs, row-major `(len, features)`.
    pub fn inputs(&self) -> &[f32] {
        &self.inputs
    }

    /// All labels, `(len,)`.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The samples `range` (in order) as a new data set with the same feature and class
    /// counts.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Result<InMemory> {
        if range.start > range.end || range.end > self.len() {
            return Err(Error::InvalidArgument(format!(
                "sample range {range:?} is outside a data set of {} samples",
                self.len()
            )));
        }
        InMemory::new(
            self.inputs[range.start * self.features..range.end * self.features].to_vec(),
            self.labels[range].to_vec(),
            self.features,
            self.classes,
        )
    }
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn features(&self) -> usize {
        self.features
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn get(&self, i: usize) -> (&[f32], u32) {
        let row = &self.inputs[i * self.features..(i + 1) * self.features];
        (row, self.labels[i])
    }
}
