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
//!
//! Files: this one (the types and their accessors), `header.rs` (the format: typed
//! header parsing, `to_bytes` / `from_bytes`), `file.rs` (file I/O and atomic save),
//! `digest.rs` (the checksum) and `state.rs` (optimizer and scaler state tensors, which
//! the scaler and the optimizer save through this module).

mod digest;
#[cfg(not(target_arch = "wasm32"))]
mod file;
mod header;
pub mod state;

pub use state::{StateData, StateTensor};

use crate::{DType, Error, Result};
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
