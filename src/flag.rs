//! The found-inf flag that 16-bit stores raise on overflow. It sits below the kernels
//! that bind it (ops) and the loss scaler that reads it (amp re-exports it).

use crate::{Gpu, Result};

/// A GPU-resident found-inf flag: one `atomic<u32>` that kernels with a `found_inf` slot
/// raise (atomicOr 1) when they store an inf or NaN into a 16-bit tensor. The loss scaler
/// reads it on the GPU to skip the step; nothing reads it on the host during a step.
#[derive(Debug, Clone)]
pub struct OverflowFlag {
    buffer: wgpu::Buffer,
}

impl OverflowFlag {
    pub fn new(gpu: &Gpu) -> Result<OverflowFlag> {
        let buffer = gpu.scoped("allocating the found-inf flag", || {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("halfgrad found_inf"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        gpu.queue().write_buffer(&buffer, 0, &[0u8; 16]);
        Ok(OverflowFlag { buffer })
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Clears the flag inside a step's encoder (ordered with the step's kernels).
    pub fn clear(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.clear_buffer(&self.buffer, 0, None);
    }

    /// Reads the flag (one readback; for tests and statistics, never inside a step).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn is_raised_blocking(&self, gpu: &Gpu) -> Result<bool> {
        let bytes = gpu.read_buffer_blocking(&self.buffer, 4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != 0)
    }
}
