//! What the trainer holds on the GPU, measured from its tensors ([`Tensor::byte_len`]),
//! set beside the textbook count for mixed-precision Adam.
//!
//! The textbook (Micikevicius et al. 2018; ZeRO, Rajbhandari et al. 2020) counts 16 bytes
//! per parameter: fp16 weights 2 + fp16 gradients 2 + fp32 master weights 4 + two fp32
//! Adam moments 8. halfgrad keeps parameter gradients in f32 (they are accumulated,
//! unscaled and clipped in f32, never rounded to 16 bits), so it holds 2 + 4 + 4 + 8 = 18
//! bytes per parameter in f16 / bf16 and 16 in f32 (no 16-bit copy). Activations and
//! their gradients are stored in the 16-bit dtype: half the f32 bytes.

use super::config::TrainConfig;
use super::trainer::Trainer;
use crate::amp::Precision;
use crate::layout;
use crate::nn::{check_plan, DeviceBudget, Model, Role, SizePlan};
use crate::ops::loss_scale::check_groups;
use crate::{DType, Gpu, Result, Tensor};
use std::fmt::Write;

/// Bytes held by a trainer's tensors, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReport {
    pub precision: Precision,
    /// Trainable scalars.
    pub params: usize,
    /// Rows per step (activations scale with it).
    pub batch: usize,
    /// f32 master weights.
    pub master_weights: usize,
    /// f16 / bf16 weight copies read by the matrix products (0 in f32).
    pub low_copies: usize,
    /// Adam first and second moments (f32).
    pub moments: usize,
    /// Parameter gradients (f32).
    pub grads: usize,
    /// Forward values: the input batch, every layer's output, saved layer-norm
    /// statistics, per-example losses.
    pub activations: usize,
    /// Gradients of the layer outputs (the backward's activation gradients).
    pub activation_grads: usize,
}

impl MemoryReport {
    /// Weights, gradients and optimizer state: everything that scales with the
    /// parameter count.
    pub fn parameter_bytes(&self) -> usize {
        self.master_weights + self.low_copies + self.moments + self.grads
    }

    /// Everything that scales with the batch.
    pub fn activation_bytes(&self) -> usize {
        self.activations + self.activation_grads
    }

    pub fn total(&self) -> usize {
        self.parameter_bytes() + self.activation_bytes()
    }

    /// `bytes / params`.
    pub fn per_param(&self, bytes: usize) -> f64 {
        bytes as f64 / self.params.max(1) as f64
    }

    /// One line for a run summary.
    pub fn summary_line(&self) -> String {
        format!(
            "{} B held: weights+grads+Adam {} B ({:.1} B/param: master {:.0} + 16-bit copy {:.0} \
             + f32 grads {:.0} + moments {:.0}; textbook 16), activations {} B",
            group(self.total()),
            group(self.parameter_bytes()),
            self.per_param(self.parameter_bytes()),
            self.per_param(self.master_weights),
            self.per_param(self.low_copies),
            self.per_param(self.grads),
            self.per_param(self.moments),
            group(self.activation_bytes()),
        )
    }

    /// A table of `reports` side by side (one column per precision, e.g. f32, f16, bf16),
    /// with bytes per parameter and the textbook comparison.
    pub fn table(reports: &[MemoryReport]) -> String {
        let mut s = String::new();
        let Some(first) = reports.first() else {
            return s;
        };
        let _ = writeln!(
            s,
            "memory held by the trainer's tensors ({} parameters, batch {})",
            group(first.params),
            first.batch
        );
        let _ = write!(s, "{:<28}", "");
        for r in reports {
            let _ = write!(s, "{:>24}", r.precision.to_string());
        }
        let _ = writeln!(s);
        let _ = write!(s, "{:<28}", "");
        for _ in reports {
            let _ = write!(s, "{:>14}{:>10}", "bytes", "B/param");
        }
        let _ = writeln!(s);
        type Row = (&'static str, fn(&MemoryReport) -> usize, bool);
        let rows: [Row; 9] = [
            ("master weights (f32)", |r| r.master_weights, true),
            ("16-bit weight copy", |r| r.low_copies, true),
            ("parameter grads (f32)", |r| r.grads, true),
            ("Adam moments (2 x f32)", |r| r.moments, true),
            ("  weights + grads + Adam", |r| r.parameter_bytes(), true),
            ("activations", |r| r.activations, false),
            ("activation grads", |r| r.activation_grads, false),
            ("  activations total", |r| r.activation_bytes(), false),
            ("total", |r| r.total(), false),
        ];
        for (name, get, per_param) in rows {
            let _ = write!(s, "{name:<28}");
            for r in reports {
                let b = get(r);
                if per_param {
                    let _ = write!(s, "{:>14}{:>10.1}", group(b), r.per_param(b));
                } else {
                    let _ = write!(s, "{:>14}{:>10}", group(b), "");
                }
            }
            let _ = writeln!(s);
        }
        if reports
            .iter()
            .any(|r| r.low_copies > 0 && r.low_copies < 2 * r.params)
        {
            let _ = writeln!(
                s,
                "the 16-bit copy holds the weight matrices only (biases and LayerNorm \
                 parameters are read in f32), hence under 2 B/param"
            );
        }
        if let Some(f32_report) = reports.iter().find(|r| r.precision == Precision::F32) {
            let base = f32_report.activation_bytes() as f64;
            for r in reports.iter().filter(|r| r.precision != Precision::F32) {
                let _ = writeln!(
                    s,
                    "{} activations: {:.2} x the f32 bytes",
                    r.precision,
                    r.activation_bytes() as f64 / base.max(1.0)
                );
            }
        }
        let _ = writeln!(
            s,
            "textbook mixed-precision Adam: 16 B/param (fp16 weights 2 + fp16 grads 2 + fp32 \
             master 4 + two fp32 moments 8).\nhalfgrad keeps f32 gradients (accumulated, \
             unscaled and clipped in f32): 2 + 4 + 4 + 8 = 18 B/param in f16/bf16, 16 in f32 \
             (no 16-bit copy).\nActivations and their gradients are stored in the 16-bit \
             dtype: half the f32 bytes."
        );
        // No trailing blanks from the empty per-parameter columns.
        s.lines()
            .map(|l| l.trim_end())
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }
}

impl MemoryReport {
    /// The planned bytes by role (see [`Trainer::plan`]); backward scratch counts with
    /// the activation gradients, the small fixed state buffers are left out (as
    /// [`Trainer::memory`] leaves them out).
    pub fn from_plan(plan: &SizePlan) -> MemoryReport {
        let bytes = |r: Role| plan.role_bytes(r) as usize;
        MemoryReport {
            precision: plan.policy.precision,
            params: plan.num_params() as usize,
            batch: plan.batch,
            master_weights: bytes(Role::MasterWeights),
            low_copies: bytes(Role::LowCopy),
            moments: bytes(Role::Moments),
            grads: bytes(Role::Grads),
            activations: bytes(Role::Activations),
            activation_grads: bytes(Role::ActivationGrads) + bytes(Role::Scratch),
        }
    }

    /// The plans of one model in several precisions: the role table
    /// ([`MemoryReport::table`]), then bytes per tensor group (layer) and the buffer
    /// that is largest, each set against the adapter's limits.
    pub fn plan_table(plans: &[SizePlan], budget: &DeviceBudget) -> String {
        let reports: Vec<MemoryReport> = plans.iter().map(MemoryReport::from_plan).collect();
        let mut s = MemoryReport::table(&reports);
        let Some(first) = plans.first() else {
            return s;
        };
        let _ = writeln!(
            s,
            "\nplanned bytes per tensor group (weights+grads+Adam | activations)"
        );
        let _ = write!(s, "{:<14}", "group");
        for p in plans {
            let _ = write!(s, "{:>34}", p.policy.precision.to_string());
        }
        let _ = writeln!(s);
        let groups: Vec<Vec<(String, u64, u64)>> = plans.iter().map(SizePlan::groups).collect();
        for (i, (name, _, _)) in first.groups().iter().enumerate() {
            let _ = write!(s, "{name:<14}");
            for g in &groups {
                let (_, params, acts) = g.get(i).cloned().unwrap_or_default();
                let _ = write!(
                    s,
                    "{:>16} | {:>15}",
                    group(params as usize),
                    group(acts as usize)
                );
            }
            let _ = writeln!(s);
        }
        let _ = write!(s, "{:<14}", "all buffers");
        for p in plans {
            let _ = write!(s, "{:>34}", group(p.total() as usize));
        }
        let _ = writeln!(s, "\n{}", budget.describe());
        for p in plans {
            let largest = p.tensors.iter().max_by_key(|t| t.bytes());
            let verdict = match p.check(budget) {
                Ok(()) => "fits".to_string(),
                Err(o) => format!(
                    "does NOT fit: {} needs {} B, over {} = {} B",
                    o.tensor,
                    group(o.bytes as usize),
                    o.limit_name,
                    group(o.limit as usize)
                ),
            };
            if let Some(t) = largest {
                let _ = writeln!(
                    s,
                    "{}: {} buffers, largest `{}` {:?} {} = {} B; {verdict}",
                    p.policy.precision,
                    p.tensors.len(),
                    t.name,
                    t.shape,
                    t.dtype,
                    group(t.bytes() as usize)
                );
            }
        }
        s
    }
}

impl<M: Model> Trainer<M> {
    /// Every buffer [`Trainer::with_model`] would allocate for `model` under `config`
    /// (its batch and precision), computed without a GPU: the model's plan
    /// ([`Model::plan`]), the Adam moments of every parameter, the loss scaler's and the
    /// optimizer's state buffers and the gradient-norm partial sums. `None` when the
    /// model does not plan.
    pub fn plan(config: &TrainConfig, model: &M::Config) -> Result<Option<SizePlan>> {
        let Some(mut plan) = M::plan(model, config.batch, config.policy())? else {
            return Ok(None);
        };
        let params: Vec<(String, String, Vec<usize>)> = plan
            .params()
            .map(|t| (t.group.clone(), t.name.clone(), t.shape.clone()))
            .collect();
        let state = "trainer state";
        plan.raw(
            state,
            "loss scaler",
            Role::State,
            &[layout::scaler::ALLOCATED],
            DType::U32,
        );
        plan.raw(
            state,
            "adamw hyper",
            Role::State,
            &[layout::hyper::ALLOCATED],
            DType::F32,
        );
        plan.raw(
            state,
            "adamw work",
            Role::State,
            &[layout::work::ALLOCATED],
            DType::U32,
        );
        let partials: usize = params
            .iter()
            .map(|(_, _, shape)| check_groups(crate::tensor::numel(shape)) as usize)
            .sum();
        plan.raw(
            state,
            "grad-norm partials",
            Role::State,
            &[partials],
            DType::U32,
        );
        for (group, name, shape) in &params {
            for moment in ["exp_avg", "exp_avg_sq"] {
                plan.moment(group, &format!("{name}.{moment}"), shape);
            }
        }
        Ok(Some(plan))
    }

    /// Refuses `model` at `config`'s batch when a planned buffer exceeds the adapter's
    /// `max_storage_buffer_binding_size`, `max_buffer_size` or u32 indexing, or the total
    /// exceeds the memory budget ([`DeviceBudget::of`]), before anything is allocated:
    /// [`Error::DoesNotFit`](crate::Error::DoesNotFit) names the buffer, its size, the
    /// limit and the largest batch that fits. `Ok` for models that do not plan.
    pub fn check_fits(gpu: &Gpu, config: &TrainConfig, model: &M::Config) -> Result<()> {
        if Trainer::<M>::plan(config, model)?.is_none() {
            return Ok(());
        }
        let budget = DeviceBudget::of(gpu.caps(), gpu.adapter().device_type == "Cpu");
        check_plan(&budget, "batch", config.batch, |batch| {
            let config = TrainConfig {
                batch,
                ..config.clone()
            };
            Ok(Trainer::<M>::plan(&config, model)?
                .unwrap_or_else(|| SizePlan::new(config.policy(), batch)))
        })
    }
}

/// `1234567` -> `1,234,567`.
fn group(n: usize) -> String {
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

impl<M: Model> Trainer<M> {
    /// Bytes held by this trainer's tensors, by role (see [`MemoryReport`]).
    pub fn memory(&self) -> MemoryReport {
        let bytes = |t: &Tensor| t.byte_len();
        let params = self.model.params().params();
        let mut r = MemoryReport {
            precision: self.config.precision,
            params: self.model.params().num_scalars(),
            batch: self.model.layout().batch,
            master_weights: params.iter().map(|p| bytes(&p.master)).sum(),
            low_copies: params
                .iter()
                .filter_map(|p| p.low.as_ref())
                .map(bytes)
                .sum(),
            moments: params
                .iter()
                .filter_map(|p| self.optim.moments(&p.name))
                .map(|(m, v)| bytes(m) + bytes(v))
                .sum(),
            grads: params.iter().map(|p| bytes(&p.grad)).sum(),
            activations: 0,
            activation_grads: 0,
        };
        // Every value of the graph (inputs, activations, saved statistics, losses) and
        // every activation gradient, scratch included.
        let graph = self.model.graph();
        for (value, _) in graph.tensors() {
            r.activations += bytes(value);
        }
        // Gradient buffers are shared by values whose lifetimes do not overlap.
        r.activation_grads += graph.grad_buffers().into_iter().map(bytes).sum::<usize>();
        r.activation_grads += graph.scratch().iter().map(bytes).sum::<usize>();
        r
    }
}
