//! The per-device pipeline cache. It belongs to the device (one per
//! [`Gpu`](super::Gpu)); [`crate::kernels`] composes the shaders and fills it. The key is
//! plain data (kernel name, slot dtypes, f16 path, overrides), so this layer needs nothing
//! of the kernel declarations above it.

use crate::DType;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A compiled pipeline with its bind-group layout.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// What makes two pipelines the same: the kernel, one dtype per tensor slot, the f16
/// storage path and the sorted pipeline-override constants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub kernel: &'static str,
    pub dtypes: Vec<DType>,
    pub f16_native: bool,
    pub overrides: Vec<(String, u64)>,
}

/// Pipelines by [`PipelineKey`]. Creation happens once per key.
#[derive(Default)]
pub struct KernelCache {
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
}

impl KernelCache {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub(crate) fn get(&self, key: &PipelineKey) -> Option<Arc<Pipeline>> {
        self.pipelines.lock().ok().and_then(|m| m.get(key).cloned())
    }
    pub(crate) fn insert(&self, key: PipelineKey, pipeline: Arc<Pipeline>) {
        if let Ok(mut m) = self.pipelines.lock() {
            m.insert(key, pipeline);
        }
    }
}
