//! The GPU context: adapter choice, capability probe, device + queue, error scopes turned
//! into `Result`, device-lost state, and async readback.

pub mod pipelines;
pub mod pool;

use crate::{Error, Result};
use pipelines::KernelCache;
use pool::BufferPool;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Which precision paths and limits the opened device offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    /// `enable f16;` shaders (native f16 loads and arithmetic) are available and enabled.
    pub shader_f16: bool,
    /// The adapter has shader-f16 but it was turned off (`HALFGRAD_DISABLE_F16` / options).
    pub shader_f16_disabled: bool,
    /// Subgroup operations, with the adapter's subgroup size range.
    pub subgroups: Option<(u32, u32)>,
    /// GPU timestamp queries (used by the bench commands).
    pub timestamps: bool,
    /// Cooperative matrix shape (m, n, k) for f16 x f16 -> f32, when the adapter has one.
    pub cooperative_matrix: Option<(u32, u32, u32)>,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
}

impl Capabilities {
    /// One line naming the f16 matrix path this device uses.
    pub fn f16_path(&self) -> &'static str {
        if self.cooperative_matrix.is_some() {
            "f16 cooperative matrix"
        } else if self.shader_f16 {
            "f16 native"
        } else {
            "f16 packed"
        }
    }
}

/// Facts about the adapter, for `halfgrad info` and the training summary.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterFacts {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
}

/// How to choose and open the device. `GpuOptions::from_env()` reads the environment.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Pick the first adapter whose name contains this (case-insensitive).
    pub adapter: Option<String>,
    /// Do not use shader-f16 even when the adapter has it (forces the packed f16 path).
    pub disable_f16: bool,
    /// Do not use cooperative matrices even when the adapter has them.
    pub disable_cooperative_matrix: bool,
    /// Pretend the storage-binding limit is this many bytes (tests of over-limit tensors).
    pub max_storage_binding_override: Option<u64>,
}

impl GpuOptions {
    /// `HALFGRAD_ADAPTER=<substring>`, `HALFGRAD_DISABLE_F16=1`, `HALFGRAD_DISABLE_COOP=1`.
    /// (`WGPU_BACKEND` is honoured by the instance itself.)
    pub fn from_env() -> Self {
        let flag = |name: &str| {
            std::env::var(name)
                .map(|v| !v.is_empty() && v != "0")
                .unwrap_or(false)
        };
        GpuOptions {
            adapter: std::env::var("HALFGRAD_ADAPTER")
                .ok()
                .filter(|s| !s.is_empty()),
            disable_f16: flag("HALFGRAD_DISABLE_F16"),
            disable_cooperative_matrix: flag("HALFGRAD_DISABLE_COOP"),
            max_storage_binding_override: None,
        }
    }
}

pub(crate) struct GpuInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub caps: Capabilities,
    pub facts: AdapterFacts,
    pub lost: Arc<Mutex<Option<String>>>,
    pub lost_flag: Arc<AtomicBool>,
    pub uncaptured: Arc<Mutex<Option<String>>>,
    pub readbacks: AtomicU64,
    pub submissions: AtomicU64,
    pub kernels: KernelCache,
    pub pool: Arc<BufferPool>,
}

/// An open device. Cheap to clone; all clones share the device, caches and pool.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.inner.facts.name)
            .finish()
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn device_type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

async fn choose_adapter(instance: &wgpu::Instance, opts: &GpuOptions) -> Result<wgpu::Adapter> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let mut adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        // Compute needs a real WebGPU-class backend; GL adapters cannot run storage-heavy kernels.
        adapters.retain(|a| a.get_info().backend != wgpu::Backend::Gl);
        if let Some(want) = &opts.adapter {
            let want = want.to_lowercase();
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&want));
            if adapters.is_empty() {
                return Err(Error::NoAdapter(format!(
                    "HALFGRAD_ADAPTER={want:?} matches none of {names:?}"
                )));
            }
        }
        adapters.sort_by_key(|a| device_type_rank(a.get_info().device_type));
        adapters.into_iter().next().ok_or_else(|| {
            Error::NoAdapter(
                "no Vulkan, Metal or DX12 adapter; on Linux install a driver \
                 (`apt-get install mesa-vulkan-drivers` gives the lavapipe software adapter)"
                    .into(),
            )
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = opts;
        instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| Error::NoAdapter(format!("this browser offers no WebGPU adapter ({e})")))
    }
}

impl Gpu {
    /// Opens the preferred adapter with the options from the environment.
    pub async fn new() -> Result<Gpu> {
        Gpu::with_options(GpuOptions::from_env()).await
    }

    /// Blocking [`Gpu::new`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Gpu> {
        pollster::block_on(Gpu::new())
    }

    /// Blocking [`Gpu::with_options`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options_blocking(opts: GpuOptions) -> Result<Gpu> {
        pollster::block_on(Gpu::with_options(opts))
    }

    pub async fn with_options(opts: GpuOptions) -> Result<Gpu> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        // Vulkan, Metal, DX12 and browser WebGPU; GL cannot run these kernels. WGPU_BACKEND
        // still narrows the choice.
        desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let instance = wgpu::Instance::new(desc);
        let adapter = choose_adapter(&instance, &opts).await?;
        let info = adapter.get_info();
        let have = adapter.features();

        // Request every useful feature the adapter has.
        // SUBGROUP_BARRIER: the cooperative-matrix tile kernels name `subgroupBarrier()`
        // (their subgroup epilogue), so naga refuses them on a device without it.
        let mut want = wgpu::Features::SUBGROUP
            | wgpu::Features::SUBGROUP_BARRIER
            | wgpu::Features::TIMESTAMP_QUERY;
        if !opts.disable_f16 {
            want |= wgpu::Features::SHADER_F16;
        }
        let coop_shape = if cfg!(target_arch = "wasm32") || opts.disable_cooperative_matrix {
            None
        } else if have.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            adapter
                .cooperative_matrix_properties()
                .iter()
                .find(|p| {
                    p.m_size == 16
                        && p.n_size == 16
                        && p.k_size == 16
                        && p.ab_type == wgpu::CooperativeScalarType::F16
                        && p.cr_type == wgpu::CooperativeScalarType::F32
                })
                .map(|p| (p.m_size, p.n_size, p.k_size))
        } else {
            None
        };
        if coop_shape.is_some() {
            want |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
        }
        let features = have & want;
        // The adapter's own limits, not wgpu's small defaults: big storage bindings matter.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("halfgrad"),
                required_features: features,
                required_limits: limits.clone(),
                // SAFETY: cooperative matrices are experimental in wgpu 30; we only enable
                // them when the adapter reports a 16x16x16 f16 -> f32 configuration, and
                // every kernel that uses them is validated by naga in the test suite.
                experimental_features: if coop_shape.is_some() {
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;

        let caps = Capabilities {
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            shader_f16_disabled: opts.disable_f16 && have.contains(wgpu::Features::SHADER_F16),
            subgroups: features
                .contains(wgpu::Features::SUBGROUP)
                .then_some((info.subgroup_min_size, info.subgroup_max_size)),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            cooperative_matrix: coop_shape,
            max_storage_buffer_binding_size: opts
                .max_storage_binding_override
                .map_or(limits.max_storage_buffer_binding_size, |o| {
                    o.min(limits.max_storage_buffer_binding_size)
                }),
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        };
        let facts = AdapterFacts {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
        };

        let lost = Arc::new(Mutex::new(None::<String>));
        let lost_flag = Arc::new(AtomicBool::new(false));
        {
            let lost = lost.clone();
            let lost_flag = lost_flag.clone();
            device.set_device_lost_callback(move |reason, msg| {
                let text = format!("{reason:?}: {msg}");
                log::error!("device lost: {text}");
                if let Ok(mut l) = lost.lock() {
                    l.get_or_insert(text);
                }
                lost_flag.store(true, Ordering::SeqCst);
            });
        }
        // wgpu's default handler panics; record the error and return it from the next call.
        let uncaptured = Arc::new(Mutex::new(None::<String>));
        {
            let uncaptured = uncaptured.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                log::error!("uncaptured wgpu error: {e}");
                if let Ok(mut u) = uncaptured.lock() {
                    u.get_or_insert(e.to_string());
                }
            }));
        }
        log::info!(
            "halfgrad: adapter {} ({:?}), {caps:?}",
            info.name,
            info.backend
        );
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                pool: Arc::new(BufferPool::new(device.clone())),
                kernels: KernelCache::new(),
                device,
                queue,
                caps,
                facts,
                lost,
                lost_flag,
                uncaptured,
                readbacks: AtomicU64::new(0),
                submissions: AtomicU64::new(0),
            }),
        })
    }

    pub fn caps(&self) -> &Capabilities {
        &self.inner.caps
    }

    pub fn adapter(&self) -> &AdapterFacts {
        &self.inner.facts
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// Number of buffer readbacks (map_async of results) since the device opened. A
    /// training step adds none; tests use this to prove it.
    pub fn readback_count(&self) -> u64 {
        self.inner.readbacks.load(Ordering::SeqCst)
    }

    /// Number of queue submissions made through [`Gpu::submit`].
    pub fn submission_count(&self) -> u64 {
        self.inner.submissions.load(Ordering::SeqCst)
    }

    /// `Err(DeviceLost)` once the device is gone; an earlier uncaptured error otherwise.
    pub fn check(&self) -> Result<()> {
        if self.inner.lost_flag.load(Ordering::SeqCst) {
            let why = self.inner.lost.lock().ok().and_then(|l| l.clone());
            return Err(Error::DeviceLost(
                why.unwrap_or_else(|| "unknown reason".into()),
            ));
        }
        if let Some(msg) = self.inner.uncaptured.lock().ok().and_then(|mut u| u.take()) {
            return Err(Error::Gpu {
                context: "earlier GPU call".into(),
                message: msg,
            });
        }
        Ok(())
    }

    /// Destroys the device, as a driver reset would. Every later call returns `DeviceLost`.
    /// Used by tests and by recovery drills.
    pub fn simulate_device_loss(&self) {
        self.inner.device.destroy();
        // The callback may fire only on the next poll; mark the loss now so no call races it.
        if let Ok(mut l) = self.inner.lost.lock() {
            l.get_or_insert("Device::destroy was called".into());
        }
        self.inner.lost_flag.store(true, Ordering::SeqCst);
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns a reported
    /// error into `Error::Gpu`. On the web the scopes cannot be awaited synchronously;
    /// errors there surface through the uncaptured-error record on the next `check`.
    pub(crate) fn scoped<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.check()?;
        #[cfg(not(target_arch = "wasm32"))]
        {
            let oom = self
                .inner
                .device
                .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let validation = self
                .inner
                .device
                .push_error_scope(wgpu::ErrorFilter::Validation);
            let out = f();
            let v = pollster::block_on(validation.pop());
            let o = pollster::block_on(oom.pop());
            self.check()?;
            if let Some(e) = v.or(o) {
                return Err(Error::Gpu {
                    context: context.to_string(),
                    message: e.to_string(),
                });
            }
            Ok(out)
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = context;
            let out = f();
            self.check()?;
            Ok(out)
        }
    }

    /// Submits one command buffer. The one place halfgrad calls `queue.submit`.
    pub fn submit(&self, commands: wgpu::CommandBuffer) -> Result<wgpu::SubmissionIndex> {
        self.check()?;
        self.inner.submissions.fetch_add(1, Ordering::SeqCst);
        let idx = self.inner.queue.submit(Some(commands));
        self.check()?;
        Ok(idx)
    }

    /// A fresh command encoder.
    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Blocks until all submitted work is done (native); a no-op on the web.
    pub fn wait_idle(&self) -> Result<()> {
        self.check()?;
        #[cfg(not(target_arch = "wasm32"))]
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.poll_error(e))?;
        self.check()
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn poll_error(&self, e: wgpu::PollError) -> Error {
        if self.inner.lost_flag.load(Ordering::SeqCst) {
            return self
                .check()
                .err()
                .unwrap_or(Error::DeviceLost(e.to_string()));
        }
        Error::Gpu {
            context: "device poll".into(),
            message: e.to_string(),
        }
    }

    /// Copies `bytes` bytes from the start of `src` to the host. One readback.
    pub async fn read_buffer(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        self.check()?;
        let padded = bytes.div_ceil(wgpu::COPY_BUFFER_ALIGNMENT) * wgpu::COPY_BUFFER_ALIGNMENT;
        if padded > src.size() {
            return Err(Error::InvalidArgument(format!(
                "read_buffer: {bytes} bytes asked of a buffer of {} bytes",
                src.size()
            )));
        }
        let staging = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("halfgrad readback"),
            size: padded.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.encoder("readback");
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, padded);
        self.submit(enc.finish())?;
        self.inner.readbacks.fetch_add(1, Ordering::SeqCst);

        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.poll_error(e))?;
        let mapped = rx.receive().await;
        self.check()?;
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                return Err(Error::Gpu {
                    context: "mapping a readback buffer".into(),
                    message: e.to_string(),
                })
            }
            None => return Err(Error::DeviceLost("readback was abandoned".into())),
        }
        let data = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Gpu {
                    context: "reading a mapped buffer".into(),
                    message: e.to_string(),
                })?;
            view[..bytes as usize].to_vec()
        };
        staging.unmap();
        Ok(data)
    }

    /// Blocking [`Gpu::read_buffer`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_buffer_blocking(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        pollster::block_on(self.read_buffer(src, bytes))
    }
}
