//! Storage dtypes. Every 16-bit dtype is 2 bytes an element in memory on every adapter;
//! only the shader that reads it differs (see `kernels` and `shaders/dtype/`).
//!
//! `U32` is a storage dtype for integers (class labels, token ids), not a compute dtype:
//! no `Precision` maps to it, it is not in [`DType::ALL`], and kernel slots reject it
//! unless they list it. Upload and download it with `Tensor::from_u32` / `read_u32`.

use half::{bf16, f16};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// Unsigned 32-bit integers (labels, token ids): storage only, never computed in.
    U32,
}

impl DType {
    /// The floating-point dtypes (every compute dtype; not `U32`).
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Whether this is a floating-point dtype (every dtype but `U32`).
    pub fn is_float(self) -> bool {
        self != DType::U32
    }

    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
        }
    }

    /// The safetensors dtype with the same bytes.
    pub fn safetensors(self) -> safetensors::Dtype {
        match self {
            DType::F32 => safetensors::Dtype::F32,
            DType::F16 => safetensors::Dtype::F16,
            DType::BF16 => safetensors::Dtype::BF16,
            DType::U32 => safetensors::Dtype::U32,
        }
    }

    /// Host-side encoding of f32 values into this dtype's bytes (round to nearest even,
    /// identical to the GPU cast kernels). `U32` converts with `as u32` (saturating,
    /// truncating): integers go through `Tensor::from_u32`, which never converts, and
    /// `Tensor::from_f32` refuses `U32`.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            DType::F32 => bytemuck::cast_slice(values).to_vec(),
            DType::F16 => {
                let v: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
                bytemuck::cast_slice(&v).to_vec()
            }
            DType::BF16 => {
                let v: Vec<bf16> = values.iter().map(|&x| bf16::from_f32(x)).collect();
                bytemuck::cast_slice(&v).to_vec()
            }
            DType::U32 => {
                let v: Vec<u32> = values.iter().map(|&x| x as u32).collect();
                bytemuck::cast_slice(&v).to_vec()
            }
        }
    }

    /// Host-side decoding of this dtype's bytes into f32 (exact for the float dtypes;
    /// `U32` values above 2^24 round: `Tensor::read_u32` reads them exactly).
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            DType::U32 => bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
        }
    }

    /// Rounds an f32 to this dtype and back: the value a GPU store of `x` holds (`U32`:
    /// the `as u32` conversion of [`DType::encode`]).
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F32 => x,
            DType::U32 => x as u32 as f32,
            DType::F16 => f16::from_f32(x).to_f32(),
            DType::BF16 => bf16::from_f32(x).to_f32(),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(DType::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "u32" | "uint32" => Ok(DType::U32),
            other => Err(crate::Error::InvalidArgument(format!(
                "unknown dtype `{other}` (expected f32, f16, bf16 or u32)"
            ))),
        }
    }
}
