//! The UCI optical handwritten digits (8x8, 1,797 samples, 10 classes), embedded.
//!
//! Source, licence and file layout: data/README.md and data/LICENSE-digits.txt
//! (E. Alpaydin and C. Kaynak, UCI, CC BY 4.0, via scikit-learn's copy).

use super::InMemory;
use crate::{Error, Result};

/// data/digits.bin, written by data/make_digits.py.
static DIGITS_BIN: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.bin"));

const MAGIC: &[u8; 8] = b"HGDIGIT1";
const HEADER: usize = 24;

/// The embedded UCI optical digits set: 8x8 images, pixels 0..16 scaled to [0, 1].
///
/// **Split (fixed):** train = the first [`Digits::TRAIN`] = 1,437 samples, test = the
/// last [`Digits::TEST`] = 360, in the order of scikit-learn's `load_digits()`. This is
/// `train_test_split(X, y, test_size=0.2, shuffle=False)`; every class has 33..37 test
/// samples (see data/README.md for the per-class table).
#[derive(Debug, Clone, Copy)]
pub struct Digits;

impl Digits {
    /// Samples in the whole set.
    pub const SAMPLES: usize = 1797;
    /// Samples in the training split (the first ones).
    pub const TRAIN: usize = 1437;
    /// Samples in the test split (the last ones).
    pub const TEST: usize = 360;
    /// Image side in pixels.
    pub const SIDE: usize = 8;
    /// Values per sample (8 x 8, row-major).
    pub const FEATURES: usize = 64;
    /// Digits 0..9.
    pub const CLASSES: usize = 10;
    /// Largest raw pixel value; pixels are divided by it.
    pub const MAX_PIXEL: u8 = 16;

    /// The fixed (train, test) split, pixels in [0, 1].
    pub fn load() -> Result<(InMemory, InMemory)> {
        let all = Self::load_all()?;
        Ok((
            all.slice(0..Self::TRAIN)?,
            all.slice(Self::TRAIN..Self::SAMPLES)?,
        ))
    }

    /// All 1,797 samples in file order, pixels in [0, 1].
    pub fn load_all() -> Result<InMemory> {
        let (pixels, labels) = Self::raw()?;
        let inputs = pixels
            .iter()
            .map(|&p| f32::from(p) / f32::from(Self::MAX_PIXEL))
            .collect();
        let labels = labels.iter().map(|&l| u32::from(l)).collect();
        InMemory::new(inputs, labels, Self::FEATURES, Self::CLASSES)
    }

    /// The embedded bytes, checked: pixels `(1797, 64)` u8 in 0..16 and labels
    /// `(1797,)` u8 in 0..9.
    pub fn raw() -> Result<(&'static [u8], &'static [u8])> {
        let bad = |message: String| Error::Io {
            path: "data/digits.bin (embedded)".into(),
            message,
        };
        let bytes = DIGITS_BIN;
        let field = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        };
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(bad("missing HGDIGIT1 header".into()));
        }
        let (n, f, c) = (field(8), field(12), field(16));
        if (n, f, c) != (Self::SAMPLES, Self::FEATURES, Self::CLASSES) {
            return Err(bad(format!(
                "header says {n} samples x {f} features, {c} classes"
            )));
        }
        if bytes.len() != HEADER + n * (f + 1) {
            return Err(bad(format!(
                "{} bytes, expected {}",
                bytes.len(),
                HEADER + n * (f + 1)
            )));
        }
        let (pixels, labels) = bytes[HEADER..].split_at(n * f);
        if pixels.iter().any(|&p| p > Self::MAX_PIXEL) || labels.iter().any(|&l| l as usize >= c) {
            return Err(bad("pixel or label out of range".into()));
        }
        Ok((pixels, labels))
    }
}
