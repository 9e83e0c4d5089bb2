//! `Tensor { buffer, shape, dtype }`, host upload/download, and the buffer pool that lets
//! a repeated step allocate nothing new.

use crate::{DType, Error, Gpu, Result};
use half::{bf16, f16};
use std::sync::Arc;

pub use crate::gpu::pool::{BufferPool, BUFFER_ALIGN, TENSOR_USAGE};

impl Gpu {
    /// The device's tensor buffer pool (tests read [`BufferPool::created`] to prove that a
    /// repeated step allocates nothing).
    pub fn pool(&self) -> &BufferPool {
        &self.inner.pool
    }
}

struct Storage {
    buffer: wgpu::Buffer,
    pool: Arc<BufferPool>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.pool.release(self.buffer.clone());
    }
}

/// A GPU tensor: row-major, contiguous, `shape.iter().product()` elements of `dtype`.
/// Clones share the buffer.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Vec<usize>,
    dtype: DType,
    gpu: Gpu,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype)
    }
}

/// Elements in a shape; rank 0 is a scalar (one element). A shape whose product
/// overflows `usize` gives `usize::MAX` (never a panic); [`checked_numel`] tells the two
/// apart.
pub fn numel(shape: &[usize]) -> usize {
    checked_numel(shape).unwrap_or(usize::MAX)
}

/// Elements in a shape, `None` when the product overflows `usize` (a shape with a zero
/// dimension has 0 elements whatever its other dimensions).
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// The most elements a tensor may have: kernels index elements with `u32`.
pub const MAX_ELEMENTS: u64 = u32::MAX as u64;

/// `numel * size` bytes of a shape, or an error for a shape too big to count.
fn shape_bytes(shape: &[usize], dtype: DType) -> Result<usize> {
    checked_numel(shape)
        .and_then(|n| n.checked_mul(dtype.size_bytes()))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "shape {shape:?} of {dtype} has more bytes than fit in a usize"
            ))
        })
}

impl Tensor {
    /// Checks that a tensor of `shape` and `dtype` could be created on `gpu` (not empty,
    /// countable, addressable with u32 indices, within the binding and buffer limits)
    /// without creating it; returns its padded byte size. Layers call it before building
    /// large host-side initial values.
    pub fn check_size(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<u64> {
        let bytes = shape_bytes(shape, dtype)? as u64;
        let n = bytes / dtype.size_bytes() as u64;
        if n == 0 {
            return Err(Error::Empty {
                what: "tensor",
                shape: shape.to_vec(),
            });
        }
        let padded = bytes.div_ceil(BUFFER_ALIGN) * BUFFER_ALIGN;
        let caps = gpu.caps();
        if n > MAX_ELEMENTS {
            return Err(Error::TooLarge {
                what: "tensor",
                bytes,
                limit_name: "u32 element index (kernels address at most 2^32 - 1 elements)",
                limit: MAX_ELEMENTS * dtype.size_bytes() as u64,
            });
        }
        for (limit_name, limit) in [
            (
                "max_storage_buffer_binding_size",
                caps.max_storage_buffer_binding_size,
            ),
            ("max_buffer_size", caps.max_buffer_size),
        ] {
            if padded > limit {
                return Err(Error::TooLarge {
                    what: "tensor",
                    bytes: padded,
                    limit_name,
                    limit,
                });
            }
        }
        Ok(padded)
    }

    /// A tensor with unspecified contents (a pooled buffer may hold old data).
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        gpu.check()?;
        let padded = Tensor::check_size(gpu, shape, dtype)?;
        let pool = gpu.inner.pool.clone();
        let buffer = gpu.scoped("allocating a tensor", || pool.acquire(padded))?;
        Ok(Tensor {
            storage: Arc::new(Storage { buffer, pool }),
            shape: shape.to_vec(),
            dtype,
            gpu: gpu.clone(),
        })
    }

    /// A tensor with unspecified contents in a buffer of its own, outside the device's
    /// pool (freed, not pooled, when the last clone drops): scratch that an op holds for
    /// its lifetime on some adapters only (the rescaled bf16 products), so the pool and
    /// the adapter-independent size plans keep matching.
    pub(crate) fn empty_unpooled(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        gpu.check()?;
        let padded = Tensor::check_size(gpu, shape, dtype)?;
        let pool = Arc::new(BufferPool::new(gpu.device().clone()));
        let buffer = gpu.scoped("allocating a scratch tensor", || pool.acquire(padded))?;
        Ok(Tensor {
            storage: Arc::new(Storage { buffer, pool }),
            shape: shape.to_vec(),
            dtype,
            gpu: gpu.clone(),
        })
    }

    /// Uploads raw little-endian bytes of `dtype` (exactly `numel * size` bytes).
    pub fn from_bytes(gpu: &Gpu, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        let expected = shape_bytes(shape, dtype)?;
        if bytes.len() != expected {
            return Err(Error::DataLength {
                shape: shape.to_vec(),
                expected: expected / dtype.size_bytes(),
                got: bytes.len() / dtype.size_bytes(),
            });
        }
        let t = Tensor::empty(gpu, shape, dtype)?;
        t.write_bytes(bytes)?;
        Ok(t)
    }

    /// Uploads f32 values, rounding to `dtype` on the host (nearest even, like the GPU).
    /// `dtype` is a float dtype (`U32` tensors come from [`Tensor::from_u32`]).
    pub fn from_f32(gpu: &Gpu, shape: &[usize], data: &[f32], dtype: DType) -> Result<Tensor> {
        float_only("Tensor::from_f32", dtype)?;
        check_len(shape, data.len())?;
        Tensor::from_bytes(gpu, shape, dtype, &dtype.encode(data))
    }

    /// Uploads integers as a `U32` tensor (labels, token ids).
    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        Tensor::from_bytes(gpu, shape, DType::U32, bytemuck::cast_slice(data))
    }

    pub fn from_f16(gpu: &Gpu, shape: &[usize], data: &[f16]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        Tensor::from_bytes(gpu, shape, DType::F16, bytemuck::cast_slice(data))
    }

    pub fn from_bf16(gpu: &Gpu, shape: &[usize], data: &[bf16]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        Tensor::from_bytes(gpu, shape, DType::BF16, bytemuck::cast_slice(data))
    }

    /// Every element set to `value` (rounded to the dtype; for `U32` an integer value in
    /// range, else `Error::InvalidArgument`).
    pub fn full(gpu: &Gpu, shape: &[usize], dtype: DType, value: f32) -> Result<Tensor> {
        let integer = (value >= 0.0 && value <= u32::MAX as f32 && value.fract() == 0.0)
            .then_some(value as u32);
        if dtype == DType::U32 && integer.is_none() {
            return Err(Error::InvalidArgument(format!(
                "Tensor::full: {value} is not a u32 value"
            )));
        }
        // The device checks (empty, overflow, limits) come before the host vector, so an
        // absurd shape is an error, never a host allocation failure.
        let t = Tensor::empty(gpu, shape, dtype)?;
        match integer {
            Some(v) if dtype == DType::U32 => t.write_u32(&vec![v; t.len()])?,
            _ => t.write_f32(&vec![value; t.len()])?,
        }
        Ok(t)
    }

    pub fn zeros(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::full(gpu, shape, dtype, 0.0)
    }

    /// Overwrites the contents from host bytes (queued; ordered before later submissions).
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<()> {
        if bytes.len() != self.byte_len() {
            return Err(Error::DataLength {
                shape: self.shape.clone(),
                expected: self.len(),
                got: bytes.len() / self.dtype.size_bytes(),
            });
        }
        self.gpu.check()?;
        // write_buffer needs a multiple of 4 bytes; the padding is ours to fill.
        if bytes.len().is_multiple_of(4) {
            self.gpu.queue().write_buffer(self.buffer(), 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().div_ceil(4) * 4, 0);
            self.gpu.queue().write_buffer(self.buffer(), 0, &padded);
        }
        Ok(())
    }

    /// Overwrites the contents from f32 values, rounded to the tensor's dtype.
    pub fn write_f32(&self, data: &[f32]) -> Result<()> {
        float_only("Tensor::write_f32", self.dtype)?;
        check_len(&self.shape, data.len())?;
        // F32 needs no conversion: write the caller's bytes without a host copy (the
        // trainer uploads every batch through here).
        match self.dtype {
            DType::F32 => self.write_bytes(bytemuck::cast_slice(data)),
            dtype => self.write_bytes(&dtype.encode(data)),
        }
    }

    /// Overwrites a `U32` tensor's contents without a host copy (per-step labels).
    pub fn write_u32(&self, data: &[u32]) -> Result<()> {
        self.expect_u32("Tensor::write_u32")?;
        check_len(&self.shape, data.len())?;
        self.write_bytes(bytemuck::cast_slice(data))
    }

    fn expect_u32(&self, op: &'static str) -> Result<()> {
        if self.dtype != DType::U32 {
            return Err(Error::DTypeMismatch {
                op,
                expected: "u32".into(),
                got: self.dtype,
            });
        }
        Ok(())
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn len(&self) -> usize {
        numel(&self.shape)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of data (without the buffer's padding).
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype.size_bytes()
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.storage.buffer
    }
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The same buffer seen with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.len() {
            return Err(Error::shape(
                "reshape",
                format!("{} elements", self.len()),
                format!("{shape:?}"),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// The first `numel(shape)` elements of the same buffer seen with `shape` (scratch that
    /// products of different sizes share: kernels address only the elements they are
    /// told of).
    pub fn prefix(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) > self.len() || numel(shape) == 0 {
            return Err(Error::shape(
                "prefix",
                format!("1 to {} elements", self.len()),
                format!("{shape:?}"),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// Downloads the raw bytes. One readback.
    pub async fn read_bytes(&self) -> Result<Vec<u8>> {
        self.gpu
            .read_buffer(self.buffer(), self.byte_len() as u64)
            .await
    }

    /// Downloads and widens to f32 (exact). Float tensors only.
    pub async fn read_f32(&self) -> Result<Vec<f32>> {
        float_only("Tensor::read_f32", self.dtype)?;
        Ok(self.dtype.decode(&self.read_bytes().await?))
    }

    /// Downloads a `U32` tensor.
    pub async fn read_u32(&self) -> Result<Vec<u32>> {
        self.expect_u32("Tensor::read_u32")?;
        let bytes = self.read_bytes().await?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Blocking [`Tensor::read_u32`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_u32_vec(&self) -> Result<Vec<u32>> {
        pollster::block_on(self.read_u32())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        pollster::block_on(self.read_bytes())
    }

    /// Blocking download as f32 (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        pollster::block_on(self.read_f32())
    }

    /// Downloads raw 16-bit patterns (F16 or BF16 tensors).
    pub async fn read_u16_bits(&self) -> Result<Vec<u16>> {
        if self.dtype.size_bytes() != 2 {
            return Err(Error::DTypeMismatch {
                op: "read_u16_bits",
                expected: "f16 or bf16".into(),
                got: self.dtype,
            });
        }
        let bytes = self.read_bytes().await?;
        Ok(bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    /// Blocking [`Tensor::read_u16_bits`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_u16_bits(&self) -> Result<Vec<u16>> {
        pollster::block_on(self.read_u16_bits())
    }
}

/// `Error::DTypeMismatch` for `U32`, which holds integers, not f32 values.
fn float_only(op: &'static str, dtype: DType) -> Result<()> {
    if !dtype.is_float() {
        return Err(Error::DTypeMismatch {
            op,
            expected: "a float dtype (f32, f16 or bf16)".into(),
            got: dtype,
        });
    }
    Ok(())
}

fn check_len(shape: &[usize], got: usize) -> Result<()> {
    let expected = checked_numel(shape).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "shape {shape:?} has more elements than fit in a usize"
        ))
    })?;
    if expected == 0 {
        return Err(Error::Empty {
            what: "tensor",
            shape: shape.to_vec(),
        });
    }
    if got != expected {
        return Err(Error::DataLength {
            shape: shape.to_vec(),
            expected,
            got,
        });
    }
    Ok(())
}
