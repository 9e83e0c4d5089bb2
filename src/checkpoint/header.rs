//! The safetensors header, parsed in one pass without intermediate JSON values: every
//! allocation is a name, a dtype or shape of a tensor entry or a metadata string, so
//! the memory a header costs stays a small multiple of its size. (serde's `flatten`,
//! which safetensors' own `Metadata` uses, first buffers the whole header as generic
//! values: tens of times its size for adversarial input.)
//!
//! Also the two directions of the format: [`Checkpoint::to_bytes`] and
//! [`Checkpoint::from_bytes`] / [`Checkpoint::from_bytes_unverified`].

use super::{
    bad, numel, Checkpoint, NamedTensor, TensorDType, CHECKSUM_KEY, MAX_HEADER_BYTES, METADATA_KEY,
};
use crate::Result;
use safetensors::tensor::TensorInfo;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

struct Header {
    /// The `__metadata__` string map, if present (JSON `null` counts as absent).
    pub metadata: Option<BTreeMap<String, String>>,
    /// Tensor entries in JSON order.
    pub tensors: Vec<(String, Info)>,
}

#[derive(Deserialize)]
struct Info {
    #[serde(deserialize_with = "dtype")]
    pub dtype: RawDType,
    #[serde(deserialize_with = "shape")]
    pub shape: Vec<usize>,
    pub data_offsets: (usize, usize),
}

/// A dtype name: one halfgrad reads, or another (kept for the error message).
enum RawDType {
    Supported(TensorDType),
    Other(String),
}

fn dtype<'de, D: Deserializer<'de>>(d: D) -> Result<RawDType, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = RawDType;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a safetensors dtype name")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<RawDType, E> {
            Ok(match s {
                "F32" => RawDType::Supported(TensorDType::F32),
                "F16" => RawDType::Supported(TensorDType::F16),
                "BF16" => RawDType::Supported(TensorDType::BF16),
                "U32" => RawDType::Supported(TensorDType::U32),
                other => RawDType::Other(other.to_string()),
            })
        }
    }
    d.deserialize_str(V)
}

fn shape<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<usize>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a shape of at most {} dimensions", super::MAX_RANK)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<usize>, A::Error> {
            let mut dims = Vec::new();
            while let Some(d) = seq.next_element::<usize>()? {
                if dims.len() == super::MAX_RANK {
                    return Err(de::Error::custom(format!(
                        "shape has more than {} dimensions",
                        super::MAX_RANK
                    )));
                }
                dims.push(d);
            }
            Ok(dims)
        }
    }
    d.deserialize_seq(V)
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Header, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Header;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensor entries and `__metadata__`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
                let mut header = Header {
                    metadata: None,
                    tensors: Vec::new(),
                };
                let mut seen_metadata = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == super::METADATA_KEY {
                        if seen_metadata {
                            return Err(de::Error::custom("`__metadata__` appears twice"));
                        }
                        seen_metadata = true;
                        header.metadata = map.next_value()?;
                    } else {
                        let info: Info = map.next_value()?;
                        header.tensors.push((key, info));
                    }
                }
                Ok(header)
            }
        }
        d.deserialize_map(V)
    }
}

impl Checkpoint {
    /// The safetensors file bytes, with a fresh `halfgrad.checksum` entry (replacing any
    /// in `metadata`). Deterministic: the same checkpoint gives the same bytes. Fails on
    /// duplicate, empty or reserved (`__metadata__`) names and on data that does not fit
    /// its shape.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let origin = self.origin();
        for t in &self.tensors {
            t.check(origin)?;
        }
        let mut meta: serde_json::Map<String, serde_json::Value> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        meta.insert(
            CHECKSUM_KEY.into(),
            serde_json::Value::String(format!("{:016x}", self.digest())),
        );
        let mut header = serde_json::Map::new();
        header.insert(METADATA_KEY.into(), serde_json::Value::Object(meta));
        let mut offset = 0usize;
        for t in &self.tensors {
            let info = TensorInfo {
                dtype: t.dtype.safetensors(),
                shape: t.shape.clone(),
                data_offsets: (offset, offset + t.data.len()),
            };
            offset += t.data.len();
            let info = serde_json::to_value(info)
                .map_err(|e| bad(origin, format!("tensor `{}`: {e}", t.name)))?;
            if header.insert(t.name.clone(), info).is_some() {
                return Err(bad(origin, format!("duplicate tensor name `{}`", t.name)));
            }
        }
        let mut json = serde_json::to_vec(&header).map_err(|e| bad(origin, e.to_string()))?;
        // Pad to 8 bytes so the tensor data starts aligned, as safetensors does.
        json.resize(json.len().next_multiple_of(8), b' ');

        let mut bytes = Vec::with_capacity(8 + json.len() + offset);
        bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&json);
        for t in &self.tensors {
            bytes.extend_from_slice(&t.data);
        }
        Ok(bytes)
    }

    /// Parses a checkpoint written by [`Checkpoint::to_bytes`] and verifies its
    /// `halfgrad.checksum`. `origin` (a path or a description) goes into errors.
    /// Accepts F32, F16, BF16 and U32 tensors; any malformation or corruption is an
    /// [`Error::Checkpoint`].
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Checkpoint> {
        let mut checkpoint = Self::from_bytes_unverified(bytes, origin)?;
        let Some(stored) = checkpoint.metadata.remove(CHECKSUM_KEY) else {
            return Err(bad(
                origin,
                format!(
                    "no `{CHECKSUM_KEY}` metadata: not written by halfgrad, or damaged \
                     (Checkpoint::from_bytes_unverified reads other safetensors files)"
                ),
            ));
        };
        let actual = format!("{:016x}", checkpoint.digest());
        if stored != actual {
            return Err(bad(
                origin,
                format!("checksum mismatch (stored {stored:?}, contents give {actual:?}): the file is corrupted"),
            ));
        }
        Ok(checkpoint)
    }

    /// Parses any safetensors file with F32, F16, BF16 and U32 tensors, without requiring or
    /// checking `halfgrad.checksum` (it stays in `metadata` if present). Structural
    /// checks are the same as [`Checkpoint::from_bytes`]'s; only data corruption that
    /// keeps the structure intact goes unnoticed.
    pub fn from_bytes_unverified(bytes: &[u8], origin: &str) -> Result<Checkpoint> {
        let err = |message: String| bad(origin, message);
        // The 8-byte header length must fit in what follows before it is trusted.
        let Some((size_field, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(err(format!(
                "{} bytes is too short for a safetensors file (needs an 8-byte header length)",
                bytes.len()
            )));
        };
        let header_len = u64::from_le_bytes(*size_field);
        if header_len > rest.len() as u64 || header_len > MAX_HEADER_BYTES as u64 {
            return Err(err(format!(
                "header length {header_len} exceeds the {} bytes that follow it (truncated or not a safetensors file)",
                rest.len()
            )));
        }
        let (header, data) = rest.split_at(header_len as usize);
        let header =
            std::str::from_utf8(header).map_err(|e| err(format!("header is not UTF-8: {e}")))?;
        let parsed: Header =
            serde_json::from_str(header).map_err(|e| err(format!("bad header: {e}")))?;
        let Header {
            metadata,
            mut tensors,
        } = parsed;

        // A name twice is ambiguous (JSON parsers keep either one): refuse it. Sorting
        // keeps this O(n log n) for headers with very many entries.
        let mut names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(err(format!("duplicate tensor name `{}`", w[0])));
        }
        drop(names);

        // File order is offset order; zero-size tensors sharing an offset go by name
        // (the order `digest` uses, so a checksum never depends on JSON key order).
        tensors.sort_by(|(na, a), (nb, b)| {
            (a.data_offsets, na.as_str()).cmp(&(b.data_offsets, nb.as_str()))
        });
        let mut end = 0usize;
        for (name, info) in &tensors {
            let dtype = match &info.dtype {
                RawDType::Supported(d) => *d,
                RawDType::Other(other) => {
                    return Err(err(format!(
                        "tensor `{name}` has dtype {other:?}; only F32, F16, BF16 and U32 are supported"
                    )))
                }
            };
            let (start, stop) = info.data_offsets;
            if start != end || stop < start {
                return Err(err(format!(
                    "tensor `{name}`: offsets {start}..{stop} do not continue at byte {end} \
                     (tensors must be back to back, without gaps or overlaps)"
                )));
            }
            let bytes = numel(&info.shape).and_then(|n| n.checked_mul(dtype.size_bytes()));
            if bytes != Some(stop - start) {
                return Err(err(format!(
                    "tensor `{name}`: offsets {start}..{stop} do not hold shape {:?} of {dtype}",
                    info.shape
                )));
            }
            end = stop;
        }
        if end != data.len() {
            return Err(err(format!(
                "header describes {end} bytes of tensor data but the file holds {}",
                data.len()
            )));
        }

        let tensors = tensors
            .into_iter()
            .map(|(name, info)| {
                let (start, stop) = info.data_offsets;
                let dtype = match info.dtype {
                    RawDType::Supported(d) => d,
                    RawDType::Other(_) => unreachable!("checked above"),
                };
                NamedTensor {
                    name,
                    shape: info.shape,
                    dtype,
                    data: data[start..stop].to_vec(),
                }
            })
            .collect::<Vec<_>>();
        let checkpoint = Checkpoint {
            tensors,
            metadata: metadata.unwrap_or_default(),
            origin: origin.to_string(),
        };
        for t in &checkpoint.tensors {
            t.check(origin)?;
        }
        Ok(checkpoint)
    }
}

impl Checkpoint {
    /// The tensors in the order a load returns them: by byte offset in the file, which is
    /// [`Checkpoint::tensors`]' order, except that zero-size tensors sharing an offset go
    /// by name (the file cannot record their order: safetensors headers are key-sorted).
    pub(super) fn file_order(&self) -> Vec<&NamedTensor> {
        let mut offset = 0usize;
        let mut keyed: Vec<((usize, usize), &NamedTensor)> = self
            .tensors
            .iter()
            .map(|t| {
                let start = offset;
                offset = offset.saturating_add(t.data.len());
                ((start, offset), t)
            })
            .collect();
        keyed.sort_by(|(a, ta), (b, tb)| (a, &ta.name).cmp(&(b, &tb.name)));
        keyed.into_iter().map(|(_, t)| t).collect()
    }
}
