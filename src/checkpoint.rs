//! Checkpoints: named tensors plus string metadata in the safetensors format.
//!
//! The container knows nothing about models or trainers: a trainer decides the tensor
//! names (PyTorch state-dict names for weights, e.g. `0.weight`, and its own for
//! optimizer state) and the metadata keys, and checks them on load with
//! [`Checkpoint::get_f32`], [`Checkpoint::expect_names`] and [`Checkpoint::expect_meta`].
//!
//! File layout (standard safetensors, readable by `safetensors.safe_open` in Python):
//! an 8-byte little-endian header length `n`, `n` bytes of JSON header padded with
//! spaces to a multiple of 8, then the tensors' little-endian bytes back to back, in the
//! order of [`Checkpoint::tensors`]. The JSON keys come out sorted, so the same
//! checkpoint always gives the same bytes.
//!
//! Reading never panics and allocates at most a small multiple of the input's size (the
//! tensor bytes once, plus names, shapes and metadata strings; `cargo xtask fuzz`
//! measures it): the header length is checked against the file before it is trusted,
//! the header is parsed in one typed pass (no generic JSON values, shapes of at most
//! [`MAX_RANK`] dimensions), offsets, shapes and dtype sizes are checked with
//! overflow-checked arithmetic, and the tensor bytes must cover the rest of the file
//! exactly. Every failure is an [`Error::Checkpoint`] naming the file (or [`Error::Io`]
//! for the file system).
//!
//! safetensors has no checksum, so a flipped bit in the tensor data would load silently.
//! [`Checkpoint::to_bytes`] therefore adds the metadata entry `halfgrad.checksum`
//! (a 64-bit digest of names, dtypes, shapes, metadata and data; it detects accidental
//! corruption, it is not cryptographic) and [`Checkpoint::from_bytes`] requires and
//! verifies it, then removes it from [`Checkpoint::metadata`]. Safetensors files from
//! other tools load with [`Checkpoint::from_bytes_unverified`].
//!
//! Element types: F32, F16 and BF16 (weights, activations, optimizer moments) and U32
//! (counters such as the optimizer step, stored exactly: a u32 kept as f32 would lose
//! integers past 2^24, and one kept as f32 bits could be mangled by NaN handling), see
//! [`TensorDType`]. Any other safetensors dtype is refused with an [`Error::Checkpoint`].
//!
//! Saving (native only) is atomic: a temporary file in the same folder is written,
//! flushed to disk, then renamed over the target (and the folder flushed on unix), so a
//! crash or a failed save leaves the previous checkpoint intact.

use crate::optim::{StateData, StateTensor};
use crate::{DType, Error, Result};
use safetensors::tensor::TensorInfo;
use std::collections::BTreeMap;

/// Longest JSON header accepted (safetensors' own limit).
pub const MAX_HEADER_BYTES: usize = 100_000_000;

/// Most dimensions a tensor's shape may have in a file (safetensors sets no limit; a
/// cap keeps a hostile header from turning a few bytes per dimension into eight).
pub const MAX_RANK: usize = 64;

/// The metadata key safetensors reserves for the string map; no tensor may use it.
const METADATA_KEY: &str = "__metadata__";

/// Metadata key of the digest written by `to_bytes` and verified by `from_bytes`.
pub const CHECKSUM_KEY: &str = "halfgrad.checksum";

/// Origin used in error messages for checkpoints built in memory.
const IN_MEMORY: &str = "<in-memory checkpoint>";

/// The element type of a checkpoint tensor: a compute [`DType`] or `U32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorDType {
    F32,
    F16,
    BF16,
    /// Unsigned 32-bit integers (step counters and other exact integer state).
    U32,
}

impl TensorDType {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            TensorDType::F16 | TensorDType::BF16 => 2,
            TensorDType::F32 | TensorDType::U32 => 4,
        }
    }

    /// Lower-case name (`f32`, `f16`, `bf16`, `u32`); part of the checksum.
    pub fn name(self) -> &'static str {
        match self {
            TensorDType::F32 => "f32",
            TensorDType::F16 => "f16",
            TensorDType::BF16 => "bf16",
            TensorDType::U32 => "u32",
        }
    }

    /// The safetensors dtype with the same bytes.
    pub fn safetensors(self) -> safetensors::Dtype {
        match self {
            TensorDType::F32 => safetensors::Dtype::F32,
            TensorDType::F16 => safetensors::Dtype::F16,
            TensorDType::BF16 => safetensors::Dtype::BF16,
            TensorDType::U32 => safetensors::Dtype::U32,
        }
    }

    /// The floating-point [`DType`], or `None` for `U32`.
    pub fn float(self) -> Option<DType> {
        match self {
            TensorDType::F32 => Some(DType::F32),
            TensorDType::F16 => Some(DType::F16),
            TensorDType::BF16 => Some(DType::BF16),
            TensorDType::U32 => None,
        }
    }
}

impl From<DType> for TensorDType {
    fn from(d: DType) -> TensorDType {
        match d {
            DType::F32 => TensorDType::F32,
            DType::F16 => TensorDType::F16,
            DType::BF16 => TensorDType::BF16,
            DType::U32 => TensorDType::U32,
        }
    }
}

impl PartialEq<DType> for TensorDType {
    fn eq(&self, other: &DType) -> bool {
        *self == TensorDType::from(*other)
    }
}

impl std::fmt::Display for TensorDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor: a name, a row-major shape, a dtype and its little-endian bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedTensor {
    /// Unique within a checkpoint; not `__metadata__`, not empty.
    pub name: String,
    /// Row-major dimensions; `[]` is a scalar (one element).
    pub shape: Vec<usize>,
    /// Element type; F32 for master weights and optimizer moments, U32 for counters.
    pub dtype: TensorDType,
    /// `numel * dtype.size_bytes()` little-endian bytes.
    pub data: Vec<u8>,
}

impl NamedTensor {
    /// An F32 tensor from host values (`values.len()` must equal the shape's product).
    pub fn from_f32(name: impl Into<String>, shape: &[usize], values: &[f32]) -> Result<Self> {
        Self::encode(name, shape, DType::F32, values)
    }

    /// A tensor of `dtype` from host f32 values, rounded to nearest even for 16-bit
    /// dtypes (the same bits the GPU casts produce).
    pub fn encode(
        name: impl Into<String>,
        shape: &[usize],
        dtype: DType,
        values: &[f32],
    ) -> Result<Self> {
        let expected = numel(shape).ok_or_else(|| Error::DataLength {
            shape: shape.to_vec(),
            expected: usize::MAX,
            got: values.len(),
        })?;
        if values.len() != expected {
            return Err(Error::DataLength {
                shape: shape.to_vec(),
                expected,
                got: values.len(),
            });
        }
        Ok(NamedTensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: dtype.into(),
            data: dtype.encode(values),
        })
    }

    /// A U32 tensor from host values (`values.len()` must equal the shape's product).
    pub fn from_u32(name: impl Into<String>, shape: &[usize], values: &[u32]) -> Result<Self> {
        let expected = numel(shape).ok_or_else(|| Error::DataLength {
            shape: shape.to_vec(),
            expected: usize::MAX,
            got: values.len(),
        })?;
        if values.len() != expected {
            return Err(Error::DataLength {
                shape: shape.to_vec(),
                expected,
                got: values.len(),
            });
        }
        Ok(NamedTensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: TensorDType::U32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
    }

    /// An optimizer / scaler state tensor (F32 or U32, bits preserved).
    pub fn from_state(state: &StateTensor) -> Result<Self> {
        match &state.data {
            StateData::F32(v) => NamedTensor::from_f32(state.name.clone(), &state.shape, v),
            StateData::U32(v) => NamedTensor::from_u32(state.name.clone(), &state.shape, v),
        }
    }

    /// This tensor as optimizer / scaler state: F32 and U32 tensors, bits preserved;
    /// 16-bit tensors are refused (state is never stored in 16 bits).
    pub fn to_state(&self) -> Result<StateTensor> {
        self.check(IN_MEMORY)?;
        match self.dtype {
            TensorDType::F32 => Ok(StateTensor::f32(
                self.name.clone(),
                &self.shape,
                DType::F32.decode(&self.data),
            )),
            TensorDType::U32 => Ok(StateTensor::u32(
                self.name.clone(),
                &self.shape,
                self.u32_values(),
            )),
            other => Err(Error::DTypeMismatch {
                op: "optimizer state",
                expected: format!("f32 or u32 for `{}`", self.name),
                got: other.float().unwrap_or(DType::F32),
            }),
        }
    }

    fn u32_values(&self) -> Vec<u32> {
        self.data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// Number of elements (product of the shape; 1 for a scalar), `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        numel(&self.shape)
    }

    /// The values decoded to f32 (exact for every floating-point dtype; a U32 tensor is
    /// an error, see [`NamedTensor::to_u32`]).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        self.check(IN_MEMORY)?;
        match self.dtype.float() {
            Some(d) => Ok(d.decode(&self.data)),
            None => Err(bad(
                IN_MEMORY,
                format!("tensor `{}` is u32, not floating point", self.name),
            )),
        }
    }

    /// The values of a U32 tensor (a floating-point tensor is an error).
    pub fn to_u32(&self) -> Result<Vec<u32>> {
        self.check(IN_MEMORY)?;
        if self.dtype != TensorDType::U32 {
            return Err(bad(
                IN_MEMORY,
                format!("tensor `{}` is {}, not u32", self.name, self.dtype),
            ));
        }
        Ok(self.u32_values())
    }

    /// Checks the name and that the data length matches shape and dtype.
    fn check(&self, origin: &str) -> Result<()> {
        if self.name.is_empty() || self.name == METADATA_KEY {
            return Err(bad(origin, format!("invalid tensor name {:?}", self.name)));
        }
        let bytes = self
            .numel()
            .and_then(|n| n.checked_mul(self.dtype.size_bytes()));
        if bytes != Some(self.data.len()) {
            return Err(bad(
                origin,
                format!(
                    "tensor `{}`: {} bytes of data do not fit shape {:?} of {}",
                    self.name,
                    self.data.len(),
                    self.shape,
                    self.dtype
                ),
            ));
        }
        Ok(())
    }
}

/// Named tensors plus string metadata; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// The tensors, in file order. (Zero-size tensors that share an offset load in name
    /// order: a safetensors header cannot record theirs.)
    pub tensors: Vec<NamedTensor>,
    /// Free-form string metadata (safetensors' `__metadata__`), e.g. `step`, `precision`.
    pub metadata: BTreeMap<String, String>,
    /// Where this checkpoint came from, for error messages (a path, or a description).
    origin: String,
}

/// Equal when tensors (with order) and metadata are equal; the origin is ignored.
impl PartialEq for Checkpoint {
    fn eq(&self, other: &Self) -> bool {
        self.tensors == other.tensors && self.metadata == other.metadata
    }
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Checkpoint {
        Checkpoint {
            origin: IN_MEMORY.to_string(),
            ..Default::default()
        }
    }

    /// Where the checkpoint was read from (path or `from_bytes` origin).
    pub fn origin(&self) -> &str {
        if self.origin.is_empty() {
            IN_MEMORY
        } else {
            &self.origin
        }
    }

    /// Appends a tensor; refuses a duplicate name or data that does not fit the shape.
    pub fn push(&mut self, tensor: NamedTensor) -> Result<()> {
        tensor.check(self.origin())?;
        if self.tensors.iter().any(|t| t.name == tensor.name) {
            return Err(bad(
                self.origin(),
                format!("duplicate tensor name `{}`", tensor.name),
            ));
        }
        self.tensors.push(tensor);
        Ok(())
    }

    /// Appends an F32 tensor from host values.
    pub fn push_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> Result<()> {
        self.push(NamedTensor::from_f32(name, shape, values)?)
    }

    /// Appends a U32 tensor from host values.
    pub fn push_u32(&mut self, name: &str, shape: &[usize], values: &[u32]) -> Result<()> {
        self.push(NamedTensor::from_u32(name, shape, values)?)
    }

    /// Sets a metadata entry (replacing an old value).
    pub fn set_meta(&mut self, key: impl Into<String>, value: impl ToString) {
        self.metadata.insert(key.into(), value.to_string());
    }

    /// The tensor called `name`, or an error naming the file.
    pub fn tensor(&self, name: &str) -> Result<&NamedTensor> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| bad(self.origin(), format!("missing tensor `{name}`")))
    }

    /// Tensor `name`, which must have exactly `expected_shape` and `dtype`, with its byte
    /// length checked.
    fn typed_tensor(
        &self,
        name: &str,
        expected_shape: &[usize],
        dtype: TensorDType,
    ) -> Result<&NamedTensor> {
        let t = self.tensor(name)?;
        if t.shape != expected_shape {
            return Err(bad(
                self.origin(),
                format!(
                    "tensor `{name}` has shape {:?}, expected {expected_shape:?}",
                    t.shape
                ),
            ));
        }
        if t.dtype != dtype {
            return Err(bad(
                self.origin(),
                format!("tensor `{name}` is {}, expected {dtype}", t.dtype),
            ));
        }
        t.check(self.origin())?;
        Ok(t)
    }

    /// The values of F32 tensor `name`, which must have exactly `expected_shape`.
    pub fn get_f32(&self, name: &str, expected_shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.typed_tensor(name, expected_shape, DType::F32.into())?;
        Ok(DType::F32.decode(&t.data))
    }

    /// The values of U32 tensor `name`, which must have exactly `expected_shape`.
    pub fn get_u32(&self, name: &str, expected_shape: &[usize]) -> Result<Vec<u32>> {
        Ok(self
            .typed_tensor(name, expected_shape, TensorDType::U32)?
            .u32_values())
    }

    /// Checks that the checkpoint holds exactly the tensors `names` (any order): none
    /// missing, none extra.
    pub fn expect_names(&self, names: &[&str]) -> Result<()> {
        if let Some(missing) = names
            .iter()
            .find(|n| self.tensors.iter().all(|t| t.name != **n))
        {
            return Err(bad(self.origin(), format!("missing tensor `{missing}`")));
        }
        if let Some(extra) = self
            .tensors
            .iter()
            .find(|t| !names.contains(&t.name.as_str()))
        {
            return Err(bad(
                self.origin(),
                format!("unexpected tensor `{}`", extra.name),
            ));
        }
        Ok(())
    }

    /// The metadata value for `key`, or an error naming the file.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| bad(self.origin(), format!("missing metadata `{key}`")))
    }

    /// The metadata value for `key` parsed as `T` (numbers, booleans ...).
    pub fn meta_parse<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let value = self.meta(key)?;
        value.parse().map_err(|_| {
            bad(
                self.origin(),
                format!(
                    "metadata `{key}` = {value:?} is not a valid {}",
                    std::any::type_name::<T>()
                ),
            )
        })
    }

    /// Checks that metadata `key` is present and equals `expected`.
    pub fn expect_meta(&self, key: &str, expected: &str) -> Result<()> {
        let value = self.meta(key)?;
        if value != expected {
            return Err(bad(
                self.origin(),
                format!("metadata `{key}` is {value:?}, expected {expected:?}"),
            ));
        }
        Ok(())
    }

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
        let parsed: header::Header =
            serde_json::from_str(header).map_err(|e| err(format!("bad header: {e}")))?;
        let header::Header {
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
                header::RawDType::Supported(d) => *d,
                header::RawDType::Other(other) => {
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
                    header::RawDType::Supported(d) => d,
                    header::RawDType::Other(_) => unreachable!("checked above"),
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

/// The safetensors header, parsed in one pass without intermediate JSON values: every
/// allocation is a name, a dtype or shape of a tensor entry or a metadata string, so
/// the memory a header costs stays a small multiple of its size. (serde's `flatten`,
/// which safetensors' own `Metadata` uses, first buffers the whole header as generic
/// values: tens of times its size for adversarial input.)
mod header {
    use super::TensorDType;
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;
    use std::collections::BTreeMap;
    use std::fmt;

    pub(super) struct Header {
        /// The `__metadata__` string map, if present (JSON `null` counts as absent).
        pub metadata: Option<BTreeMap<String, String>>,
        /// Tensor entries in JSON order.
        pub tensors: Vec<(String, Info)>,
    }

    #[derive(Deserialize)]
    pub(super) struct Info {
        #[serde(deserialize_with = "dtype")]
        pub dtype: RawDType,
        #[serde(deserialize_with = "shape")]
        pub shape: Vec<usize>,
        pub data_offsets: (usize, usize),
    }

    /// A dtype name: one halfgrad reads, or another (kept for the error message).
    pub(super) enum RawDType {
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
}

#[cfg(not(target_arch = "wasm32"))]
mod file {
    use super::Checkpoint;
    use crate::{Error, Result};
    use std::fs::{self, File, OpenOptions};
    use std::io::{self, Write};
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Distinguishes temporary files of concurrent saves within one process.
    static SAVE_COUNTER: AtomicU64 = AtomicU64::new(0);

    fn io_err(path: &Path, what: &str, e: io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            message: format!("{what}: {e}"),
        }
    }

    impl Checkpoint {
        /// Writes the checkpoint to `path` atomically: temp file in the same folder,
        /// `sync_all`, rename over `path`, then sync the folder (unix). On failure the
        /// previous file at `path` is untouched and the temp file is removed.
        pub fn save(&self, path: &Path) -> Result<()> {
            self.save_with(path, |file, bytes| file.write_all(bytes))
        }

        /// Test hook: like [`Checkpoint::save`], but the write fails with an I/O error
        /// after `fail_after` bytes, to check that a failed save leaves no trace.
        #[doc(hidden)]
        pub fn save_failing_after(&self, path: &Path, fail_after: usize) -> Result<()> {
            self.save_with(path, |file, bytes| {
                file.write_all(&bytes[..fail_after.min(bytes.len())])?;
                Err(io::Error::other("injected write failure"))
            })
        }

        fn save_with(
            &self,
            path: &Path,
            write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
        ) -> Result<()> {
            // Serialise first: a checkpoint that cannot be encoded never touches disk.
            let bytes = self.to_bytes()?;
            let file_name = path.file_name().ok_or_else(|| Error::Io {
                path: path.display().to_string(),
                message: "not a file path".into(),
            })?;
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let tmp = dir.join(format!(
                ".{}.{}-{}.tmp",
                file_name.to_string_lossy(),
                std::process::id(),
                SAVE_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            // create_new: never truncate a file that is not ours.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io_err(&tmp, "creating temporary file", e))?;
            let written = write(&mut file, &bytes)
                .map_err(|e| io_err(&tmp, "writing", e))
                .and_then(|()| file.sync_all().map_err(|e| io_err(&tmp, "flushing", e)));
            drop(file);
            let renamed = written.and_then(|()| {
                fs::rename(&tmp, path).map_err(|e| io_err(path, "replacing with the new file", e))
            });
            if let Err(e) = renamed {
                // Best effort: the original error is the one worth reporting.
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            sync_dir(dir)
        }

        /// Reads and parses a checkpoint file; errors name `path`.
        pub fn load(path: &Path) -> Result<Checkpoint> {
            let bytes = fs::read(path).map_err(|e| io_err(path, "reading", e))?;
            Checkpoint::from_bytes(&bytes, &path.display().to_string())
        }

        /// Reads any safetensors file (see [`Checkpoint::from_bytes_unverified`]).
        pub fn load_unverified(path: &Path) -> Result<Checkpoint> {
            let bytes = fs::read(path).map_err(|e| io_err(path, "reading", e))?;
            Checkpoint::from_bytes_unverified(&bytes, &path.display().to_string())
        }
    }

    /// Makes the rename durable: a folder's entries are flushed by syncing the folder.
    #[cfg(unix)]
    fn sync_dir(dir: &Path) -> Result<()> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, "flushing folder", e))
    }

    /// Windows cannot open a folder as a file; rename there is already journaled.
    #[cfg(not(unix))]
    fn sync_dir(_dir: &Path) -> Result<()> {
        Ok(())
    }
}

impl Checkpoint {
    /// A 64-bit digest of everything `from_bytes` returns: metadata (except the checksum
    /// itself), tensor names, dtypes, shapes and bytes, each length-prefixed. Every
    /// 8-byte word goes through a bijective mixer, so any change confined to one word is
    /// always detected; other changes slip through with probability about 2^-64.
    fn digest(&self) -> u64 {
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

impl Checkpoint {
    /// The tensors in the order a load returns them: by byte offset in the file, which is
    /// [`Checkpoint::tensors`]' order, except that zero-size tensors sharing an offset go
    /// by name (the file cannot record their order: safetensors headers are key-sorted).
    fn file_order(&self) -> Vec<&NamedTensor> {
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

fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn bad(origin: &str, message: String) -> Error {
    Error::Checkpoint {
        path: origin.to_string(),
        message,
    }
}
