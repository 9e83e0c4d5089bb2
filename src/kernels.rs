//! The shader table, variant composition (storage prelude + kernel body), and the
//! pipeline cache keyed by (kernel, dtypes, f16 path, override constants).
//!
//! A kernel file in `shaders/` holds a shared head and one or more sections, each opened
//! by a line `//!kernel NAME` and holding one `main` entry point. Composition is the only
//! string work: `enable` lines, `common.wgsl`, one storage prelude per tensor slot with
//! the slot's name and binding substituted, the params uniform, the shared head and the
//! section, then the shared modules the shader asks for (last, so that they may read the
//! kernel's overrides: naga wants an override declared before its first use).
//!
//! A shader asks for a shared module with a line `//!use NAME`, in its head (every
//! section) or in one section: `reduce` (shaders/workgroup_reduce.wgsl: `wg_sum`,
//! `wg_max` and their `var<workgroup>` scratch), `coop_tiles`, `coop_scratch_epilogue` and
//! `coop_store_epilogue` (what the whole-tile cooperative-matrix kernels share: their
//! output-word store and tile order, and their two epilogues), `adam_update` (the AdamW
//! update kernels' octet and element updates) or `state_words` (the scaler / optimizer
//! word indices of [`crate::layout`] as WGSL constants). Kernels that do not ask get
//! neither.
//!
//! A line `//!words16` in a kernel's head or section swaps its float preludes for the
//! 16-byte ones (shaders/dtype/words/: `array<vec4<..>>` bindings, `load8_` / `store8_`
//! moving eight elements in 16-byte accesses); see ARCHITECTURE.md "16-byte accesses".
//!
//! An ops module declares its kernels with [`declare_kernels!`]: one line per section,
//! and the module's `KERNELS` list, which [`crate::ops::all_kernels`] chains.

use crate::{DType, Error, Gpu, Result, Tensor};
use std::sync::Arc;

/// How a slot is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    ReadWrite,
}

/// What a binding holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotKind {
    /// A tensor in one of the allowed dtypes, read through `load_NAME` / `store2_NAME`.
    Tensor(&'static [DType]),
    /// A raw `array<u32>` (class labels, counters).
    U32,
    /// A raw `array<vec4<u32>>`: 16-byte words, for kernels that copy 16-bit data in
    /// vector loads (the cooperative-matrix tile kernel).
    U32x4,
    /// A raw `array<f32>` that is not a model tensor (statistics, scaler state).
    F32,
    /// An `array<atomic<u32>>` (flags such as found-inf).
    Atomic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pub name: &'static str,
    pub kind: SlotKind,
    pub access: Access,
}

impl Slot {
    pub const fn read(name: &'static str, dtypes: &'static [DType]) -> Slot {
        Slot {
            name,
            kind: SlotKind::Tensor(dtypes),
            access: Access::Read,
        }
    }
    pub const fn write(name: &'static str, dtypes: &'static [DType]) -> Slot {
        Slot {
            name,
            kind: SlotKind::Tensor(dtypes),
            access: Access::ReadWrite,
        }
    }
    pub const fn raw(name: &'static str, kind: SlotKind, access: Access) -> Slot {
        Slot { name, kind, access }
    }
}

/// Every float dtype (`U32` tensors bind only to slots that list it).
pub const ANY: &[DType] = &[DType::F32, DType::F16, DType::BF16];
/// U32 only (labels, token ids), read with `load_NAME(i) -> u32`.
pub const U32_ONLY: &[DType] = &[DType::U32];
/// F32 only (master weights, moments, gradients of parameters, statistics).
pub const F32_ONLY: &[DType] = &[DType::F32];

/// One kernel: a section of a shader file plus the description of its bindings.
#[derive(Debug)]
pub struct KernelDef {
    /// Unique name (`file/section`), used for labels, the cache and shader dumps.
    pub name: &'static str,
    /// The whole file (`include_str!`).
    pub source: &'static str,
    /// Which `//!kernel` section of the file.
    pub section: &'static str,
    /// Bindings 0..slots.len(), in order.
    pub slots: &'static [Slot],
    /// Whether a `Params` uniform follows the slots (at binding slots.len()).
    pub params: bool,
    /// Needs `enable wgpu_cooperative_matrix;` (and shader-f16).
    pub cooperative_matrix: bool,
    /// Needs native f16 (`enable f16;`) regardless of the slots' dtypes.
    pub needs_f16: bool,
}

impl KernelDef {
    /// A kernel with a `Params` uniform that needs no optional feature; override fields
    /// with struct-update syntax (`KernelDef { needs_f16: true, ..KernelDef::new(..) }`).
    pub const fn new(
        name: &'static str,
        source: &'static str,
        section: &'static str,
        slots: &'static [Slot],
    ) -> KernelDef {
        KernelDef {
            name,
            source,
            section,
            slots,
            params: true,
            cooperative_matrix: false,
            needs_f16: false,
        }
    }
}

/// Declares the kernels of one shader file `shaders/FILE.wgsl`: one `pub static`
/// [`KernelDef`] per `//!kernel` section, named `FILE/SECTION`, plus `pub static
/// KERNELS`, the module's list (in declaration order) that `ops::all_kernels` chains.
/// Fields after the slots override [`KernelDef::new`]'s defaults.
///
/// ```ignore
/// declare_kernels! {
///     "adam";
///     /// Sums the partial norms ...
///     FINALIZE = "finalize", slots: &[Slot::raw("partials", SlotKind::F32, Access::Read)];
///     ADAMW = "adamw", slots: &UPDATE_SLOTS, needs_f16: false;
/// }
/// ```
macro_rules! declare_kernels {
    (
        $file:literal;
        $(
            $(#[$attr:meta])*
            $name:ident = $section:literal, slots: $slots:expr $(, $field:ident: $value:expr)* ;
        )+
    ) => {
        /// The shader file whose sections these kernels are.
        const SOURCE: &str =
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $file, ".wgsl"));
        $(
            $(#[$attr])*
            pub static $name: $crate::kernels::KernelDef = $crate::kernels::KernelDef {
                $($field: $value,)*
                ..$crate::kernels::KernelDef::new(
                    concat!($file, "/", $section),
                    SOURCE,
                    $section,
                    $slots,
                )
            };
        )+
        /// Every kernel this module declares (chained by `ops::all_kernels`).
        pub static KERNELS: &[&$crate::kernels::KernelDef] = &[$(&$name),+];
    };
}
pub(crate) use declare_kernels;

const COMMON: &str = include_str!("../shaders/common.wgsl");
const REDUCE: &str = include_str!("../shaders/workgroup_reduce.wgsl");
const COOP_TILES: &str = include_str!("../shaders/coop_tiles.wgsl");
const COOP_SCRATCH_EPILOGUE: &str = include_str!("../shaders/coop_scratch_epilogue.wgsl");
const COOP_STORE_EPILOGUE: &str = include_str!("../shaders/coop_store_epilogue.wgsl");
const ADAM_UPDATE: &str = include_str!("../shaders/adam_update.wgsl");
const PRELUDE_F32: &str = include_str!("../shaders/dtype/f32.wgsl");
const PRELUDE_F16: &str = include_str!("../shaders/dtype/f16.wgsl");
const PRELUDE_F16_PACKED: &str = include_str!("../shaders/dtype/f16_packed.wgsl");
const PRELUDE_BF16: &str = include_str!("../shaders/dtype/bf16.wgsl");
const PRELUDE_U32: &str = include_str!("../shaders/dtype/u32.wgsl");
const WORDS_COMMON: &str = include_str!("../shaders/dtype/words/common.wgsl");
const WORDS_F32: &str = include_str!("../shaders/dtype/words/f32.wgsl");
const WORDS_F16: &str = include_str!("../shaders/dtype/words/f16.wgsl");
const WORDS_BF16: &str = include_str!("../shaders/dtype/words/bf16.wgsl");

/// Whether a kernel asks for the 16-byte storage preludes (a line `//!words16` in its
/// head or section): its float tensors are `array<vec4<..>>` with `load8_` / `store8_`
/// besides the element and pair accessors (shaders/dtype/words/common.wgsl).
fn wants_words16(texts: &[&str]) -> bool {
    texts
        .iter()
        .flat_map(|t| t.lines())
        .any(|line| line.trim() == "//!words16")
}

/// Which concrete storage format each tensor slot has, and whether F16 slots use native
/// `array<f16>` (shader-f16) or the packed-u32 path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Variant {
    /// One dtype per `SlotKind::Tensor` slot, in slot order.
    pub dtypes: Vec<DType>,
    pub f16_native: bool,
}

impl Variant {
    pub fn new(dtypes: &[DType], f16_native: bool) -> Variant {
        Variant {
            dtypes: dtypes.to_vec(),
            f16_native,
        }
    }
}

fn section<'a>(source: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let marker = "//!kernel ";
    let head_end = source.find(marker).unwrap_or(source.len());
    let head = &source[..head_end];
    let mut rest = &source[head_end..];
    while let Some(start) = rest.find(marker) {
        let after = &rest[start + marker.len()..];
        let line_end = after.find('\n').unwrap_or(after.len());
        let this = after[..line_end].trim();
        let body_start = &after[line_end..];
        let body_end = body_start.find(marker).unwrap_or(body_start.len());
        if this == name {
            return Some((head, &body_start[..body_end]));
        }
        rest = &body_start[body_end..];
    }
    None
}

/// The shared modules named by `//!use NAME` lines in `texts`, each once, in order of
/// first use.
fn shared_modules(texts: &[&str]) -> std::result::Result<Vec<String>, String> {
    let mut names: Vec<&str> = Vec::new();
    for line in texts.iter().flat_map(|t| t.lines()) {
        if let Some(name) = line.trim_start().strip_prefix("//!use ") {
            let name = name.trim();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
        .into_iter()
        .map(|name| match name {
            "reduce" => Ok(REDUCE.to_string()),
            "coop_tiles" => Ok(COOP_TILES.to_string()),
            "coop_scratch_epilogue" => Ok(COOP_SCRATCH_EPILOGUE.to_string()),
            "coop_store_epilogue" => Ok(COOP_STORE_EPILOGUE.to_string()),
            "state_words" => Ok(crate::layout::wgsl_constants()),
            "adam_update" => Ok(ADAM_UPDATE.to_string()),
            other => Err(format!("`//!use {other}`: no such shared module")),
        })
        .collect()
}

fn prelude(template: &str, name: &str, binding: usize, writable: bool) -> String {
    let (read_part, write_part) = match template.find("//! write") {
        Some(i) => (&template[..i], &template[i + "//! write".len()..]),
        None => (template, ""),
    };
    let mut text = read_part.to_string();
    if writable {
        text.push_str(write_part);
    }
    let access = if writable { "read_write" } else { "read" };
    text.replace("$B", &binding.to_string())
        .replace("$A", access)
        .replace("$N", name)
}

/// Composes the full WGSL of one kernel variant.
pub fn compose(def: &KernelDef, variant: &Variant) -> Result<String> {
    let bad = |m: String| Error::Shader {
        kernel: def.name.to_string(),
        message: m,
    };
    let (head, body) = section(def.source, def.section)
        .ok_or_else(|| bad(format!("no `//!kernel {}` section", def.section)))?;
    let tensor_slots = def
        .slots
        .iter()
        .filter(|s| matches!(s.kind, SlotKind::Tensor(_)))
        .count();
    if variant.dtypes.len() != tensor_slots {
        return Err(bad(format!(
            "variant names {} dtypes for {tensor_slots} tensor slots",
            variant.dtypes.len()
        )));
    }
    let native = variant.f16_native || def.cooperative_matrix || def.needs_f16;
    let uses_f16 = variant.dtypes.contains(&DType::F16) && variant.f16_native;
    let mut out = String::new();
    if uses_f16 || def.cooperative_matrix || def.needs_f16 {
        out.push_str("enable f16;\n");
    }
    if def.cooperative_matrix {
        out.push_str("enable wgpu_cooperative_matrix;\n");
    }
    out.push_str(&format!("// kernel {} variant {:?}\n", def.name, variant));
    out.push_str(COMMON);
    let words16 = wants_words16(&[head, body]);
    if words16 {
        out.push_str(WORDS_COMMON);
    }

    let mut dtypes = variant.dtypes.iter();
    let mut has_found_inf = false;
    for (binding, slot) in def.slots.iter().enumerate() {
        let writable = slot.access == Access::ReadWrite;
        let access = if writable { "read_write" } else { "read" };
        match slot.kind {
            SlotKind::Tensor(allowed) => {
                let dt = *dtypes.next().expect("counted above");
                if !allowed.contains(&dt) {
                    return Err(bad(format!("slot `{}` does not accept {dt}", slot.name)));
                }
                let template = match (dt, native && variant.f16_native && !writable) {
                    (DType::F32, _) if words16 => WORDS_F32,
                    (DType::F16, _) if words16 => WORDS_F16,
                    (DType::BF16, _) if words16 => WORDS_BF16,
                    (DType::F32, _) => PRELUDE_F32,
                    (DType::F16, true) => PRELUDE_F16,
                    (DType::F16, false) => PRELUDE_F16_PACKED,
                    (DType::BF16, _) => PRELUDE_BF16,
                    (DType::U32, _) => PRELUDE_U32,
                };
                out.push_str(&prelude(template, slot.name, binding, writable));
            }
            SlotKind::U32 => out.push_str(&format!(
                "@group(0) @binding({binding}) var<storage, {access}> {}: array<u32>;\n",
                slot.name
            )),
            SlotKind::U32x4 => out.push_str(&format!(
                "@group(0) @binding({binding}) var<storage, {access}> {}: array<vec4<u32>>;\n",
                slot.name
            )),
            SlotKind::F32 => out.push_str(&format!(
                "@group(0) @binding({binding}) var<storage, {access}> {}: array<f32>;\n",
                slot.name
            )),
            SlotKind::Atomic => {
                has_found_inf |= slot.name == "found_inf";
                out.push_str(&format!(
                    "@group(0) @binding({binding}) var<storage, read_write> {}: array<atomic<u32>>;\n",
                    slot.name
                ))
            }
        }
    }
    // 16-bit stores call note_overflow() when they write inf or NaN. Kernels that carry
    // a `found_inf` flag raise it there (the loss scaler then skips the step).
    if has_found_inf {
        out.push_str("fn note_overflow() { atomicOr(&found_inf[0], 1u); }\n");
    } else {
        out.push_str("fn note_overflow() {}\n");
    }
    out.push_str(head);
    if def.params {
        out.push_str(&format!(
            "@group(0) @binding({}) var<uniform> params: Params;\n",
            def.slots.len()
        ));
    }
    out.push_str(body);
    // Shared modules last: they may read the kernel's overrides, which naga's
    // pipeline-constant pass wants declared before their first use.
    for module in shared_modules(&[head, body]).map_err(bad)? {
        out.push_str(&module);
    }
    Ok(out)
}

/// Every dtype combination a kernel accepts, for both f16 paths where F16 appears.
pub fn all_variants(def: &KernelDef) -> Vec<Variant> {
    let mut combos: Vec<Vec<DType>> = vec![vec![]];
    for slot in def.slots {
        if let SlotKind::Tensor(allowed) = slot.kind {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    allowed.iter().map(move |&d| {
                        let mut n = c.clone();
                        n.push(d);
                        n
                    })
                })
                .collect();
        }
    }
    let mut out = Vec::new();
    for c in combos {
        if def.cooperative_matrix || def.needs_f16 {
            out.push(Variant::new(&c, true));
        } else {
            out.push(Variant::new(&c, false));
            if c.contains(&DType::F16) {
                out.push(Variant::new(&c, true));
            }
        }
    }
    out
}

use crate::gpu::pipelines::PipelineKey;
pub use crate::gpu::pipelines::{KernelCache, Pipeline};

fn layout_entries(def: &KernelDef) -> Vec<wgpu::BindGroupLayoutEntry> {
    let mut entries: Vec<_> = def
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage {
                    read_only: s.access == Access::Read && s.kind != SlotKind::Atomic,
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    if def.params {
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: def.slots.len() as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    }
    entries
}

impl Gpu {
    /// The f16 storage path kernels use on this device.
    pub fn f16_native(&self) -> bool {
        self.caps().shader_f16
    }

    /// Gets (or compiles once) the pipeline for a kernel variant.
    pub fn pipeline(
        &self,
        def: &'static KernelDef,
        dtypes: &[DType],
        overrides: &[(&str, u64)],
    ) -> Result<Arc<Pipeline>> {
        self.check()?;
        if def.cooperative_matrix && self.caps().cooperative_matrix.is_none() {
            return Err(Error::MissingFeature {
                op: def.name,
                feature: "EXPERIMENTAL_COOPERATIVE_MATRIX (16x16x16 f16 -> f32)",
            });
        }
        if def.needs_f16 && !self.caps().shader_f16 {
            return Err(Error::MissingFeature {
                op: def.name,
                feature: "SHADER_F16",
            });
        }
        let variant = Variant::new(dtypes, self.f16_native());
        let mut ov: Vec<(String, u64)> =
            overrides.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        ov.sort();
        let key = PipelineKey {
            kernel: def.name,
            dtypes: variant.dtypes.clone(),
            f16_native: variant.f16_native,
            overrides: ov.clone(),
        };
        if let Some(p) = self.inner.kernels.get(&key) {
            return Ok(p);
        }
        let source = compose(def, &variant)?;
        if let Ok(dir) = std::env::var("HALFGRAD_DUMP_SHADERS") {
            let tag: String = format!(
                "{}_{:?}_{}_{:?}",
                def.name, variant.dtypes, variant.f16_native, ov
            )
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(format!("{tag}.wgsl")),
                &source,
            );
        }
        let device = self.device();
        let constants: Vec<(&str, f64)> = ov.iter().map(|(k, v)| (k.as_str(), *v as f64)).collect();
        let pipeline = self
            .scoped(def.name, || {
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(def.name),
                    source: wgpu::ShaderSource::Wgsl(source.as_str().into()),
                });
                let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(def.name),
                    entries: &layout_entries(def),
                });
                let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(def.name),
                    bind_group_layouts: &[Some(&layout)],
                    immediate_size: 0,
                });
                let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(def.name),
                    layout: Some(&pl),
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                });
                Pipeline { pipeline, layout }
            })
            .map_err(|e| match e {
                Error::Gpu { message, .. } => Error::Shader {
                    kernel: def.name.into(),
                    message,
                },
                other => other,
            })?;
        let p = Arc::new(pipeline);
        self.inner.kernels.insert(key, p.clone());
        Ok(p)
    }

    /// Workgroup grid for `threads` invocations in groups of `wg`, folded into a second
    /// dimension past the per-dimension limit (kernels use `flat_index`).
    pub fn grid_1d(&self, threads: u64, wg: u32) -> [u32; 3] {
        let groups = threads.div_ceil(wg as u64).max(1);
        let max = self.caps().max_compute_workgroups_per_dimension.max(1) as u64;
        if groups <= max {
            [groups as u32, 1, 1]
        } else {
            [max as u32, groups.div_ceil(max) as u32, 1]
        }
    }
}

/// One recorded kernel launch: pipeline, bound buffers and grid. Built once (layers build
/// theirs at construction) and encoded into any number of steps without allocating.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub label: &'static str,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
    /// Pooled scratch tensors the dispatch reads or writes that no caller holds (a
    /// multi-dispatch op's intermediates): held here so the pool never hands their
    /// buffers to another tensor while the dispatch can still run.
    scratch: Vec<Tensor>,
}

thread_local! {
    /// Dispatches encoded on this thread while a [`record_dispatches`] capture is open.
    static RECORDER: std::cell::RefCell<Option<Vec<Dispatch>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `encode` and returns, in order, every [`Dispatch`] it encoded on this thread.
/// The benchmark uses it to time a training step kernel by kernel.
pub fn record_dispatches(encode: impl FnOnce()) -> Vec<Dispatch> {
    RECORDER.with(|r| *r.borrow_mut() = Some(Vec::new()));
    encode();
    RECORDER.with(|r| r.borrow_mut().take()).unwrap_or_default()
}

impl Dispatch {
    /// This dispatch, holding `scratch` alive for as long as it exists.
    pub(crate) fn holding(mut self, scratch: &[Tensor]) -> Dispatch {
        self.scratch.extend(scratch.iter().cloned());
        self
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        RECORDER.with(|r| {
            if let Some(list) = r.borrow_mut().as_mut() {
                list.push(self.clone());
            }
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// A binding for [`Gpu::dispatch`]: a tensor or a raw buffer.
pub enum Bind<'a> {
    Tensor(&'a Tensor),
    Buffer(&'a wgpu::Buffer),
}

impl Gpu {
    /// Builds a [`Dispatch`]: binds `binds` to the kernel's slots in order (tensor dtypes
    /// select the variant) and `params` (a `#[repr(C)]` Pod struct's bytes) to the uniform.
    pub fn dispatch(
        &self,
        def: &'static KernelDef,
        binds: &[Bind<'_>],
        params: &[u8],
        overrides: &[(&str, u64)],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        if binds.len() != def.slots.len() {
            return Err(Error::InvalidArgument(format!(
                "{}: {} bindings given for {} slots",
                def.name,
                binds.len(),
                def.slots.len()
            )));
        }
        let mut dtypes = Vec::new();
        for (b, s) in binds.iter().zip(def.slots) {
            match (b, s.kind) {
                (Bind::Tensor(t), SlotKind::Tensor(allowed)) => {
                    if !allowed.contains(&t.dtype()) {
                        return Err(Error::DTypeMismatch {
                            op: def.name,
                            expected: format!("{} in {allowed:?}", s.name),
                            got: t.dtype(),
                        });
                    }
                    dtypes.push(t.dtype());
                }
                (Bind::Buffer(_), SlotKind::Tensor(_)) | (Bind::Tensor(_), _) => {
                    return Err(Error::InvalidArgument(format!(
                        "{}: slot `{}` bound to the wrong kind of buffer",
                        def.name, s.name
                    )))
                }
                (Bind::Buffer(_), _) => {}
            }
        }
        let limit = self.caps().max_storage_buffer_binding_size;
        for b in binds {
            let size = match b {
                Bind::Tensor(t) => t.buffer().size(),
                Bind::Buffer(buf) => buf.size(),
            };
            if size > limit {
                return Err(Error::TooLarge {
                    what: def.name,
                    bytes: size,
                    limit_name: "max_storage_buffer_binding_size",
                    limit,
                });
            }
        }
        let pipeline = self.pipeline(def, &dtypes, overrides)?;
        let uniform = if def.params {
            use wgpu::util::DeviceExt;
            // Uniform buffers need 16-byte-sized contents.
            let mut bytes = params.to_vec();
            bytes.resize(params.len().div_ceil(16).max(1) * 16, 0);
            Some(
                self.device()
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(def.name),
                        contents: &bytes,
                        usage: wgpu::BufferUsages::UNIFORM,
                    }),
            )
        } else {
            None
        };
        let mut entries: Vec<wgpu::BindGroupEntry> = binds
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: match b {
                    Bind::Tensor(t) => t.buffer().as_entire_binding(),
                    Bind::Buffer(buf) => buf.as_entire_binding(),
                },
            })
            .collect();
        if let Some(u) = &uniform {
            entries.push(wgpu::BindGroupEntry {
                binding: def.slots.len() as u32,
                resource: u.as_entire_binding(),
            });
        }
        let bind_group = self.scoped(def.name, || {
            self.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(def.name),
                layout: &pipeline.layout,
                entries: &entries,
            })
        })?;
        Ok(Dispatch {
            label: def.name,
            pipeline: pipeline.pipeline.clone(),
            bind_group,
            workgroups,
            scratch: Vec::new(),
        })
    }

    /// [`Gpu::run`] for an op's list of dispatches (a matrix product's).
    pub fn run_all(&self, dispatches: &[Dispatch]) -> Result<()> {
        self.run(&dispatches.iter().collect::<Vec<_>>())
    }

    /// Encodes `dispatches` into one compute pass of one command buffer and submits it.
    pub fn run(&self, dispatches: &[&Dispatch]) -> Result<()> {
        let mut enc = self.encoder("halfgrad run");
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("halfgrad run"),
                timestamp_writes: None,
            });
            for d in dispatches {
                d.encode(&mut pass);
            }
        }
        self.submit(enc.finish())?;
        Ok(())
    }
}
