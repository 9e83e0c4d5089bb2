//! What the trainer holds on the GPU, measured from its tensors ([`Tensor::byte_len`]),
//! set beside the textbook count for mixed-precision Adam.
//!
//! The textbook (Micikevicius et al. 2018; ZeRO, Rajbhandari et al. 2020) counts 16 bytes
//! per parameter: fp16 weights 2 + fp16 gradients 2 + fp32 master weights 4 + two fp32
//! Adam moments 8. halfgrad keeps parameter gradients in f32 (they are accumulated,
//! unscaled and clipped in f32, never rounded to 16 bits), so it holds 2 + 4 + 4 + 8 = 18
//! bytes per parameter in f16 / bf16 and 16 in f32 (no 16-bit copy). Activations and
//! their gradients are stored in the 16-bit dtype: half the f32 bytes.

use super::trainer::Trainer;
use crate::amp::Precision;
use crate::nn::Model;
use crate::Tensor;
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
        for (value, grad) in graph.tensors() {
            r.activations += bytes(value);
            r.activation_grads += grad.map_or(0, bytes);
        }
        r.activation_grads += graph.scratch().iter().map(bytes).sum::<usize>();
        r
    }
}
