//! The `halfgrad.checksum` digest (safetensors has no checksum of its own).

use super::{Checkpoint, CHECKSUM_KEY};

impl Checkpoint {
    /// A 64-bit digest of everything `from_bytes` returns: metadata (except the checksum
    /// itself), tensor names, dtypes, shapes and bytes, each length-prefixed. Every
    /// 8-byte word goes through a bijective mixer, so any change confined to one word is
    /// always detected; other changes slip through with probability about 2^-64.
    pub(super) fn digest(&self) -> u64 {
        let mut d = Digest(0x6861_6c66_6772_6164); // "halfgrad"
        let meta: Vec<_> = self
            .metadata
            .iter()
            .filter(|(k, _)| k.as_str() != CHECKSUM_KEY)
            .collect();
        d.word(meta.len() as u64);
        for (k, v) in meta {
            d.bytes(k.as_bytes());
            d.bytes(v.as_bytes());
        }
        d.word(self.tensors.len() as u64);
        for t in self.file_order() {
            d.bytes(t.name.as_bytes());
            d.bytes(t.dtype.name().as_bytes());
            d.word(t.shape.len() as u64);
            for &dim in &t.shape {
                d.word(dim as u64);
            }
            d.bytes(&t.data);
        }
        d.0
    }
}

/// Running state of [`Checkpoint::digest`].
struct Digest(u64);

impl Digest {
    fn word(&mut self, w: u64) {
        self.0 = crate::data::SplitMix64::mix(self.0.wrapping_add(0x9E37_79B9_7F4A_7C15) ^ w);
    }

    /// Length, then the bytes as little-endian words (the last one zero-padded).
    fn bytes(&mut self, bytes: &[u8]) {
        self.word(bytes.len() as u64);
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut last = [0u8; 8];
            last[..tail.len()].copy_from_slice(tail);
            self.word(u64::from_le_bytes(last));
        }
    }
}
