//! The buffer pool that lets a repeated step allocate nothing new. It belongs to the
//! device (one per [`Gpu`](super::Gpu)); [`crate::tensor`] takes and returns its buffers.

use std::collections::HashMap;
use std::sync::Mutex;

/// Buffers are sized in whole 16-byte blocks, so every prelude's vec2/vec4 access and
/// every pair store (`store2_*`) stays inside the allocation.
pub const BUFFER_ALIGN: u64 = 16;

/// Tensor storage usage: bound as storage, copied to and from.
pub const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Free buffers by size. Dropped tensors return theirs; new tensors of the same padded
/// size reuse them.
pub struct BufferPool {
    device: wgpu::Device,
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    created: std::sync::atomic::AtomicU64,
    created_bytes: std::sync::atomic::AtomicU64,
}

impl BufferPool {
    pub(crate) fn new(device: wgpu::Device) -> Self {
        BufferPool {
            device,
            free: Mutex::new(HashMap::new()),
            created: 0.into(),
            created_bytes: 0.into(),
        }
    }

    pub(crate) fn acquire(&self, size: u64) -> wgpu::Buffer {
        if let Some(b) = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.get_mut(&size).and_then(|v| v.pop()))
        {
            return b;
        }
        self.created
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.created_bytes
            .fetch_add(size, std::sync::atomic::Ordering::SeqCst);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("halfgrad tensor"),
            size,
            usage: TENSOR_USAGE,
            mapped_at_creation: false,
        })
    }

    pub(crate) fn release(&self, buffer: wgpu::Buffer) {
        if let Ok(mut f) = self.free.lock() {
            f.entry(buffer.size()).or_default().push(buffer);
        }
    }

    /// Buffers created so far (tests check that a repeated step creates none).
    pub fn created(&self) -> u64 {
        self.created.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bytes of the buffers created so far (tests compare them with the size plan).
    pub fn created_bytes(&self) -> u64 {
        self.created_bytes.load(std::sync::atomic::Ordering::SeqCst)
    }
}
