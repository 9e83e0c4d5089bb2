//! Named state tensors for checkpoints: optimizer moments, counters and the loss scale.
//!
//! Values are kept in their own type so a resume is bit-exact: f32 state as f32, counters
//! as u32 (a u32 step count past 2^24 is not exactly representable as an f32 value, and a
//! u32 stored as f32 bits would be mangled by NaN canonicalisation). Checkpoints store
//! them as safetensors F32 / U32 tensors ([`StateTensor::dtype`],
//! [`StateTensor::to_le_bytes`], [`StateTensor::from_le_bytes`]).

use crate::{Error, Result};

/// The values of one state tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum StateData {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

impl StateData {
    pub fn len(&self) -> usize {
        match self {
            StateData::F32(v) => v.len(),
            StateData::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn kind(&self) -> &'static str {
        match self {
            StateData::F32(_) => "f32",
            StateData::U32(_) => "u32",
        }
    }
}

/// One named state tensor (`optim.0.weight.exp_avg`, `scaler.scale`, ...), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: StateData,
}

impl StateTensor {
    pub fn f32(name: impl Into<String>, shape: &[usize], data: Vec<f32>) -> StateTensor {
        StateTensor {
            name: name.into(),
            shape: shape.to_vec(),
            data: StateData::F32(data),
        }
    }

    pub fn u32(name: impl Into<String>, shape: &[usize], data: Vec<u32>) -> StateTensor {
        StateTensor {
            name: name.into(),
            shape: shape.to_vec(),
            data: StateData::U32(data),
        }
    }

    /// The safetensors dtype of [`StateTensor::to_le_bytes`].
    pub fn dtype(&self) -> safetensors::Dtype {
        match self.data {
            StateData::F32(_) => safetensors::Dtype::F32,
            StateData::U32(_) => safetensors::Dtype::U32,
        }
    }

    /// Little-endian bytes of the values (bit patterns preserved).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match &self.data {
            StateData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            StateData::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Rebuilds a state tensor from a checkpoint's F32 or U32 tensor.
    pub fn from_le_bytes(
        name: &str,
        dtype: safetensors::Dtype,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<StateTensor> {
        let n = crate::tensor::checked_numel(shape).filter(|n| n.checked_mul(4).is_some());
        if n.map(|n| n * 4) != Some(bytes.len()) {
            return Err(Error::DataLength {
                shape: shape.to_vec(),
                expected: n.unwrap_or(usize::MAX),
                got: bytes.len() / 4,
            });
        }
        let words = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        match dtype {
            safetensors::Dtype::F32 => Ok(StateTensor::f32(
                name,
                shape,
                words.map(f32::from_bits).collect(),
            )),
            safetensors::Dtype::U32 => Ok(StateTensor::u32(name, shape, words.collect())),
            other => Err(Error::InvalidArgument(format!(
                "state tensor `{name}`: dtype {other:?} (expected F32 or U32)"
            ))),
        }
    }
}

/// Finds `name` among `tensors` and checks its shape and kind (`expected`: "f32"/"u32").
fn find<'a>(
    tensors: &'a [StateTensor],
    name: &str,
    shape: &[usize],
    expected: &str,
) -> Result<&'a StateData> {
    let t = tensors
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })?;
    let n = crate::tensor::numel(shape);
    if t.shape != shape || t.data.len() != n || t.data.kind() != expected {
        return Err(Error::shape(
            "load_state",
            format!("`{name}`: {expected} {shape:?}"),
            format!("{} {:?} ({} values)", t.data.kind(), t.shape, t.data.len()),
        ));
    }
    Ok(&t.data)
}

/// The f32 values of `name`, which must have `shape`.
pub(crate) fn find_f32<'a>(
    tensors: &'a [StateTensor],
    name: &str,
    shape: &[usize],
) -> Result<&'a [f32]> {
    match find(tensors, name, shape, "f32")? {
        StateData::F32(v) => Ok(v),
        StateData::U32(_) => unreachable!("kind checked by find"),
    }
}

/// The single u32 value of `name` (shape `[1]`).
pub(crate) fn find_u32_scalar(tensors: &[StateTensor], name: &str) -> Result<u32> {
    match find(tensors, name, &[1], "u32")? {
        StateData::U32(v) => Ok(v[0]),
        StateData::F32(_) => unreachable!("kind checked by find"),
    }
}

/// The single f32 value of `name` (shape `[1]`).
pub(crate) fn find_f32_scalar(tensors: &[StateTensor], name: &str) -> Result<f32> {
    Ok(find_f32(tensors, name, &[1])?[0])
}

/// Parses the value of `key` in string key/values, if present.
pub(crate) fn parse_kv<T: std::str::FromStr>(
    kv: &[(String, String)],
    key: &str,
) -> Result<Option<T>> {
    match kv.iter().find(|(k, _)| k == key) {
        None => Ok(None),
        Some((_, v)) => {
            v.trim().parse::<T>().map(Some).map_err(|_| {
                Error::InvalidArgument(format!("config `{key}` = {v:?} does not parse"))
            })
        }
    }
}

/// Parses an optional f32 written as a number or `none`.
pub(crate) fn parse_kv_opt_f32(kv: &[(String, String)], key: &str) -> Result<Option<Option<f32>>> {
    match kv.iter().find(|(k, _)| k == key) {
        None => Ok(None),
        Some((_, v)) if v.trim().eq_ignore_ascii_case("none") => Ok(Some(None)),
        Some(_) => Ok(parse_kv::<f32>(kv, key)?.map(Some)),
    }
}

/// Formats an optional f32 for string key/values (round-trips exactly).
pub(crate) fn fmt_opt_f32(x: Option<f32>) -> String {
    x.map_or_else(|| "none".to_string(), |v| format!("{v:?}"))
}
