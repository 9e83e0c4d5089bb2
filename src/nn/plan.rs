//! [`SizePlan`]: every buffer a trainer would allocate for a model and a batch, computed
//! from the configuration alone (no GPU), and checked against the adapter's limits
//! ([`DeviceBudget`]) before anything is allocated.
//!
//! A [`Model`](super::Model) lists its parameters and its graph's tensors
//! ([`Model::plan`](super::Model::plan)); the trainer adds the optimizer's (Adam moments,
//! partial sums) and its own small state. [`SizePlan::check`] then names the first tensor
//! past `max_storage_buffer_binding_size` (every tensor is bound whole as storage),
//! `max_buffer_size` or the u32 element index, or a total past the memory budget.
//!
//! WebGPU exposes no memory size, so the total budget is a documented heuristic:
//! `HALFGRAD_MEMORY_BUDGET` (bytes, with an optional K/M/G/T suffix, powers of 1024) when
//! set; else, for a software (CPU) adapter on Linux, the host's `MemTotal`; else unknown
//! (no total check: an allocation the device refuses is still a typed error).

use crate::gpu::Capabilities;
use crate::precision::Policy;
use crate::tensor::{checked_numel, BUFFER_ALIGN, MAX_ELEMENTS};
use crate::{DType, Error, Result};

/// What a planned buffer is for (the rows of the memory table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// f32 master weights.
    MasterWeights,
    /// f16 / bf16 weight copies read by the matrix products.
    LowCopy,
    /// Parameter gradients (f32).
    Grads,
    /// Adam first and second moments (f32).
    Moments,
    /// Forward values: inputs, layer outputs, saved statistics, losses, labels.
    Activations,
    /// Gradients of the layer outputs.
    ActivationGrads,
    /// Backward scratch (gradient terms added in afterwards) and backward-only buffers.
    Scratch,
    /// Small fixed state: loss scaler, optimizer hyper-parameters, partial sums, statistics.
    State,
}

impl Role {
    pub const ALL: [Role; 8] = [
        Role::MasterWeights,
        Role::LowCopy,
        Role::Grads,
        Role::Moments,
        Role::Activations,
        Role::ActivationGrads,
        Role::Scratch,
        Role::State,
    ];

    /// Whether the role's bytes grow with the batch (activations) rather than with the
    /// parameter count.
    pub fn scales_with_batch(self) -> bool {
        matches!(
            self,
            Role::Activations | Role::ActivationGrads | Role::Scratch
        )
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::MasterWeights => "master weight (f32)",
            Role::LowCopy => "16-bit weight copy",
            Role::Grads => "parameter grad (f32)",
            Role::Moments => "Adam moment (f32)",
            Role::Activations => "activation",
            Role::ActivationGrads => "activation grad",
            Role::Scratch => "backward scratch",
            Role::State => "state",
        })
    }
}

/// One buffer of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTensor {
    /// What it is, as messages name it (`0.weight`, `1 output`, `0.weight.exp_avg`).
    pub name: String,
    /// The layer or part it belongs to (`0`, `1`, `loss`, `optimizer`, ...).
    pub group: String,
    pub role: Role,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// Bound whole as a storage buffer (so `max_storage_buffer_binding_size` applies).
    pub bound: bool,
    /// Allocated from the tensor pool ([`BufferPool`](crate::tensor::BufferPool)) rather
    /// than as a raw buffer.
    pub pooled: bool,
}

impl PlannedTensor {
    /// Elements, or `None` when the shape's product overflows.
    pub fn elements(&self) -> Option<u64> {
        checked_numel(&self.shape).map(|n| n as u64)
    }

    /// Bytes allocated (padded to [`BUFFER_ALIGN`]), saturating at `u64::MAX`.
    pub fn bytes(&self) -> u64 {
        self.elements()
            .and_then(|n| n.checked_mul(self.dtype.size_bytes() as u64))
            .map_or(u64::MAX, |b| {
                b.div_ceil(BUFFER_ALIGN).saturating_mul(BUFFER_ALIGN)
            })
    }
}

impl PlannedTensor {
    /// The first limit this buffer alone exceeds: u32 element indexing, the storage
    /// binding size (bound buffers), the buffer size.
    pub fn overflow(&self, budget: &DeviceBudget) -> Option<Overflow> {
        let bytes = self.bytes();
        let over = |limit_name, limit| Overflow {
            tensor: format!(
                "`{}` ({:?} {}, {})",
                self.name, self.shape, self.dtype, self.role
            ),
            bytes,
            limit_name,
            limit,
            scales_with_batch: self.role.scales_with_batch(),
        };
        let elements = self.elements().unwrap_or(u64::MAX);
        if elements > MAX_ELEMENTS {
            // Elements, not bytes: the limit is on u32 indices.
            return Some(Overflow {
                bytes,
                ..over(
                    "u32 element index (kernels address at most 2^32 - 1 elements)",
                    MAX_ELEMENTS.saturating_mul(self.dtype.size_bytes() as u64),
                )
            });
        }
        if self.bound && bytes > budget.max_storage_buffer_binding_size {
            return Some(over(
                "max_storage_buffer_binding_size",
                budget.max_storage_buffer_binding_size,
            ));
        }
        if bytes > budget.max_buffer_size {
            return Some(over("max_buffer_size", budget.max_buffer_size));
        }
        None
    }
}

/// The device limits a plan is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceBudget {
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    /// Total bytes the adapter may hold, and where that figure comes from; `None` when
    /// unknown (see the module docs).
    pub total: Option<(u64, &'static str)>,
}

impl DeviceBudget {
    /// The limits of an opened device, with the total budget of [`memory_budget`].
    pub fn of(caps: &Capabilities, software_adapter: bool) -> DeviceBudget {
        DeviceBudget {
            max_storage_buffer_binding_size: caps.max_storage_buffer_binding_size,
            max_buffer_size: caps.max_buffer_size,
            total: memory_budget(software_adapter),
        }
    }

    /// Limits only, no total budget.
    pub fn limits_only(caps: &Capabilities) -> DeviceBudget {
        DeviceBudget {
            max_storage_buffer_binding_size: caps.max_storage_buffer_binding_size,
            max_buffer_size: caps.max_buffer_size,
            total: None,
        }
    }

    /// One line for the memory report.
    pub fn describe(&self) -> String {
        let total = match self.total {
            Some((bytes, source)) => format!("{} B, {source}", group(bytes as u128)),
            None => "unknown (set HALFGRAD_MEMORY_BUDGET=BYTES to check one)".into(),
        };
        format!(
            "adapter limits: max_storage_buffer_binding_size {} B, max_buffer_size {} B, \
             total {total}",
            group(self.max_storage_buffer_binding_size as u128),
            group(self.max_buffer_size as u128)
        )
    }
}

/// The environment variable that sets the total memory budget.
pub const MEMORY_BUDGET_ENV: &str = "HALFGRAD_MEMORY_BUDGET";

/// The total budget (see the module docs): `HALFGRAD_MEMORY_BUDGET`, else a software
/// adapter's host memory (Linux `MemTotal`), else `None`. An unparsable variable is
/// ignored with no budget rather than guessed at.
pub fn memory_budget(software_adapter: bool) -> Option<(u64, &'static str)> {
    if let Ok(v) = std::env::var(MEMORY_BUDGET_ENV) {
        return parse_bytes(&v).map(|b| (b, "memory budget (HALFGRAD_MEMORY_BUDGET)"));
    }
    if software_adapter {
        return host_memory().map(|b| (b, "memory budget (host MemTotal: a software adapter)"));
    }
    None
}

/// `123`, `64K`, `512M`, `8G`, `1T` (powers of 1024; an optional trailing `B` or `iB`).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (digits, shift) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 10),
        'm' | 'M' => (&s[..s.len() - 1], 20),
        'g' | 'G' => (&s[..s.len() - 1], 30),
        't' | 'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(1u64 << shift)
}

#[cfg(all(target_os = "linux", not(target_arch = "wasm32")))]
fn host_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(not(all(target_os = "linux", not(target_arch = "wasm32"))))]
fn host_memory() -> Option<u64> {
    None
}

/// A value of a [`GradPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradValue(usize);

/// The activation gradients of a graph's backward, for [`SizePlan::grads`]: the values
/// whose gradient backward writes, and the ops in forward order with the values they
/// read (those that need a gradient) and make.
#[derive(Debug, Clone, Default)]
pub struct GradPlan {
    /// (group, name, shape, dtype) of each value.
    values: Vec<(String, String, Vec<usize>, DType)>,
    /// (inputs, outputs) of each op.
    ops: Vec<(Vec<GradValue>, Vec<GradValue>)>,
}

impl GradPlan {
    pub fn new() -> GradPlan {
        GradPlan::default()
    }

    /// A value whose gradient backward writes (`shape` and `dtype` are the value's).
    pub fn value(&mut self, group: &str, name: &str, shape: &[usize], dtype: DType) -> GradValue {
        let value = (group.into(), name.into(), shape.to_vec(), dtype);
        self.values.push(value);
        GradValue(self.values.len() - 1)
    }

    /// An op (in forward order) whose backward writes the gradients of `inputs` and
    /// reads those of `outputs`.
    pub fn op(&mut self, inputs: &[GradValue], outputs: &[GradValue]) {
        self.ops.push((inputs.to_vec(), outputs.to_vec()));
    }
}

impl SizePlan {
    /// The gradient buffers backward creates for `grads`, by the rule of
    /// [`GraphBuilder::finish`](super::GraphBuilder::finish): ops in reverse; an op's
    /// backward takes a buffer for each input's gradient (a free one of the same dtype
    /// and element count, else a new one, planned here under the value's name), then
    /// frees its outputs' gradients.
    pub fn grads(&mut self, grads: &GradPlan) {
        let mut taken = vec![false; grads.values.len()];
        // (elements, dtype) of each free buffer.
        let mut free: Vec<(Option<usize>, DType)> = Vec::new();
        let key = |v: GradValue| {
            let (_, _, shape, dtype) = &grads.values[v.0];
            (checked_numel(shape), *dtype)
        };
        for (inputs, outputs) in grads.ops.iter().rev() {
            for &v in inputs {
                if std::mem::replace(&mut taken[v.0], true) {
                    continue;
                }
                match free.iter().position(|f| *f == key(v)) {
                    Some(i) => {
                        free.swap_remove(i);
                    }
                    None => {
                        let (group, name, shape, dtype) = &grads.values[v.0];
                        let name = format!("{name} grad");
                        self.push(group, name, Role::ActivationGrads, shape, *dtype, true);
                    }
                }
            }
            free.extend(outputs.iter().filter(|v| taken[v.0]).map(|&v| key(v)));
        }
    }
}

/// Why a plan does not fit: the first buffer (or the total) past a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflow {
    /// The buffer, as `name (shape dtype, role)`, or `the total of all N buffers`.
    pub tensor: String,
    pub bytes: u64,
    pub limit_name: &'static str,
    pub limit: u64,
    /// Whether the offending figure shrinks with the batch (a smaller batch can help).
    pub scales_with_batch: bool,
}

/// Every buffer a trainer would allocate for one model, precision and batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SizePlan {
    pub policy: Policy,
    /// Rows per step.
    pub batch: usize,
    pub tensors: Vec<PlannedTensor>,
}

impl SizePlan {
    pub fn new(policy: Policy, batch: usize) -> SizePlan {
        SizePlan {
            policy,
            batch,
            tensors: Vec::new(),
        }
    }

    fn push(
        &mut self,
        group: &str,
        name: String,
        role: Role,
        shape: &[usize],
        dtype: DType,
        pooled: bool,
    ) {
        self.tensors.push(PlannedTensor {
            name,
            group: group.to_string(),
            role,
            shape: shape.to_vec(),
            dtype,
            bound: true,
            pooled,
        });
    }

    /// A parameter as [`Param::from_f32`](super::Param::from_f32) allocates it: the f32
    /// master, a `compute` copy when that is 16-bit, the f32 gradient.
    pub fn param(&mut self, group: &str, name: &str, shape: &[usize], compute: DType) {
        self.push(
            group,
            name.into(),
            Role::MasterWeights,
            shape,
            DType::F32,
            true,
        );
        if compute != DType::F32 {
            let copy = format!("{name} ({compute} copy)");
            self.push(group, copy, Role::LowCopy, shape, compute, true);
        }
        let grad = format!("{name}.grad");
        self.push(group, grad, Role::Grads, shape, DType::F32, true);
    }

    /// A forward value (pooled tensor), and its gradient when `with_grad`.
    pub fn value(
        &mut self,
        group: &str,
        name: &str,
        shape: &[usize],
        dtype: DType,
        with_grad: bool,
    ) {
        self.push(group, name.into(), Role::Activations, shape, dtype, true);
        if with_grad {
            let grad = format!("{name} grad");
            self.push(group, grad, Role::ActivationGrads, shape, dtype, true);
        }
    }

    /// A pooled tensor only backward uses (scratch, saved row terms).
    pub fn scratch(&mut self, group: &str, name: &str, shape: &[usize], dtype: DType) {
        self.push(group, name.into(), Role::Scratch, shape, dtype, true);
    }

    /// The f32 partial sums of the two-pass column reductions (bias and LayerNorm
    /// parameter gradients over more than `ops::reduce::ONE_PASS_MAX_ROWS` rows), shared
    /// by shape as [`Backward::temporaries`](super::graph::Backward::temporaries) shares
    /// them. `sums`: each reduction's (rows, cols, buffers it needs at once).
    pub fn partial_sums(&mut self, group: &str, sums: &[(usize, usize, usize)]) {
        let mut most = std::collections::BTreeMap::<[usize; 2], usize>::new();
        for &(rows, cols, count) in sums {
            if let Some(shape) = crate::ops::reduce::partial_sums_shape(rows, cols) {
                let n = most.entry(shape).or_default();
                *n = (*n).max(count);
            }
        }
        for (shape, count) in most {
            for i in 0..count {
                let name = format!("column-sum partial sums {shape:?} #{i}");
                self.scratch(group, &name, &shape, DType::F32);
            }
        }
    }

    /// An f32 optimizer moment of a parameter's shape (pooled).
    pub fn moment(&mut self, group: &str, name: &str, shape: &[usize]) {
        self.push(group, name.into(), Role::Moments, shape, DType::F32, true);
    }

    /// A raw (unpooled) storage buffer of `role`, e.g. labels or optimizer state.
    pub fn raw(&mut self, group: &str, name: &str, role: Role, shape: &[usize], dtype: DType) {
        self.push(group, name.into(), role, shape, dtype, false);
    }

    /// The parameters planned so far: (name, shape) of every master weight.
    pub fn params(&self) -> impl Iterator<Item = &PlannedTensor> {
        self.tensors
            .iter()
            .filter(|t| t.role == Role::MasterWeights)
    }

    /// Trainable scalars.
    pub fn num_params(&self) -> u64 {
        self.params()
            .map(|t| t.elements().unwrap_or(u64::MAX))
            .fold(0, u64::saturating_add)
    }

    /// Bytes of one role.
    pub fn role_bytes(&self, role: Role) -> u64 {
        self.sum(|t| t.role == role)
    }

    /// Bytes of every buffer.
    pub fn total(&self) -> u64 {
        self.sum(|_| true)
    }

    /// Bytes of the tensors from the pool (what [`BufferPool::created_bytes`] counts on
    /// a fresh device).
    ///
    /// [`BufferPool::created_bytes`]: crate::tensor::BufferPool::created_bytes
    pub fn pooled_bytes(&self) -> u64 {
        self.sum(|t| t.pooled)
    }

    fn sum(&self, keep: impl Fn(&PlannedTensor) -> bool) -> u64 {
        self.tensors
            .iter()
            .filter(|t| keep(t))
            .map(PlannedTensor::bytes)
            .fold(0, u64::saturating_add)
    }

    /// Groups with their bytes: (group, parameter-side bytes, batch-side bytes). The
    /// `input` group first, then numbered groups (layer indices) in order, then the
    /// others in order of first appearance.
    pub fn groups(&self) -> Vec<(String, u64, u64)> {
        let mut out: Vec<(String, u64, u64)> = Vec::new();
        for t in &self.tensors {
            let i = match out.iter().position(|(g, _, _)| *g == t.group) {
                Some(i) => i,
                None => {
                    out.push((t.group.clone(), 0, 0));
                    out.len() - 1
                }
            };
            let slot = match t.role.scales_with_batch() {
                true => &mut out[i].2,
                false => &mut out[i].1,
            };
            *slot = slot.saturating_add(t.bytes());
        }
        out.sort_by_key(|(g, _, _)| match (g.as_str(), g.parse::<u64>()) {
            ("input", _) => (0, 0),
            (_, Ok(n)) => (1, n),
            _ => (2, 0),
        });
        out
    }

    /// The largest buffer past a limit (the one to name), or the total past the budget.
    pub fn check(&self, budget: &DeviceBudget) -> std::result::Result<(), Overflow> {
        let mut worst: Option<Overflow> = None;
        for t in &self.tensors {
            if let Some(o) = t.overflow(budget) {
                if worst.as_ref().is_none_or(|w| o.bytes > w.bytes) {
                    worst = Some(o);
                }
            }
        }
        if let Some(o) = worst {
            return Err(o);
        }
        if let Some((limit, source)) = budget.total {
            let total = self.total();
            if total > limit {
                return Err(Overflow {
                    tensor: format!("the total of all {} buffers", self.tensors.len()),
                    bytes: total,
                    limit_name: source,
                    limit,
                    scales_with_batch: true,
                });
            }
        }
        Ok(())
    }
}

/// Checks `plan_at(batch)` against `budget`; when it does not fit, the error names the
/// buffer, its size, the limit, and the largest `dimension` (`"batch"`, `"block size"`)
/// in `1..batch` whose plan fits (found by bisection: plans grow with it).
pub fn check_plan(
    budget: &DeviceBudget,
    dimension: &'static str,
    value: usize,
    plan_at: impl Fn(usize) -> Result<SizePlan>,
) -> Result<()> {
    let over = match plan_at(value)?.check(budget) {
        Ok(()) => return Ok(()),
        Err(o) => o,
    };
    let fits = |v: usize| -> Result<bool> { Ok(plan_at(v)?.check(budget).is_ok()) };
    let largest = if over.scales_with_batch && value > 1 && fits(1)? {
        // Invariant: lo fits, hi does not.
        let (mut lo, mut hi) = (1usize, value);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    } else {
        None
    };
    Err(Error::DoesNotFit {
        tensor: over.tensor,
        bytes: over.bytes,
        limit_name: over.limit_name,
        limit: over.limit,
        dimension,
        value,
        largest,
    })
}

/// `1234567` -> `1,234,567`.
pub(crate) fn group(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precision::Precision;

    #[test]
    fn byte_sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("64K"), Some(64 << 10));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes(" 8G "), Some(8 << 30));
        assert_eq!(parse_bytes("1TB"), Some(1 << 40));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("99999999999T"), None);
    }

    #[test]
    fn the_largest_fitting_batch_is_found_by_bisection() {
        let budget = DeviceBudget {
            max_storage_buffer_binding_size: 4096,
            max_buffer_size: 1 << 20,
            total: None,
        };
        let plan_at = |b: usize| -> Result<SizePlan> {
            let mut p = SizePlan::new(Policy::new(Precision::F32), b);
            p.param("0", "0.weight", &[8, 8], DType::F32);
            p.value("0", "0 output", &[b, 10], DType::F32, true);
            Ok(p)
        };
        check_plan(&budget, "batch", 102, plan_at).unwrap();
        // 103 rows of 10 f32 = 4120 -> 4128 bytes: over; 102 x 40 = 4080 fits.
        match check_plan(&budget, "batch", 500, plan_at) {
            Err(Error::DoesNotFit { largest, bytes, .. }) => {
                assert_eq!((largest, bytes), (Some(102), 20000))
            }
            other => panic!("{other:?}"),
        }
        // A parameter over the limit: no batch helps.
        let too_wide = |b: usize| -> Result<SizePlan> {
            let mut p = plan_at(b)?;
            p.param("1", "1.weight", &[33, 32], DType::F32);
            Ok(p)
        };
        match check_plan(&budget, "batch", 4, too_wide) {
            Err(e @ Error::DoesNotFit { largest: None, .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("1.weight") && msg.contains("4224"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        // The total budget.
        let total = DeviceBudget {
            max_storage_buffer_binding_size: 1 << 20,
            max_buffer_size: 1 << 20,
            total: Some((8192, "test budget")),
        };
        match check_plan(&total, "batch", 200, plan_at) {
            Err(Error::DoesNotFit {
                largest: Some(l),
                limit_name: "test budget",
                ..
            }) => assert!(
                plan_at(l).unwrap().total() <= 8192 && plan_at(l + 1).unwrap().total() > 8192
            ),
            other => panic!("{other:?}"),
        }
    }
}
