//! Evaluation and prediction with the training model.
//!
//! The model is built for a fixed batch `B`. Rather than a second model (a second copy of
//! every weight, kept in sync), evaluation runs the training model's forward on chunks of
//! `B` rows, the last one padded with zero rows whose outputs are dropped. All chunks of
//! a group go into ONE command buffer: the group's inputs and labels are uploaded once
//! into a staging buffer; per chunk, buffer copies feed the model's input and label
//! buffers, a compute pass runs the forward, and copies collect the logits and the
//! per-example losses; one readback returns them all.
//!
//! Evaluation overwrites only forward activations, which the next training step
//! recomputes, so it does not change training results (the step's loss for
//! [`Trainer::stats`] is kept apart).

use super::trainer::Trainer;
use crate::data::Dataset;
use crate::nn::{Inputs, Model};
use crate::{Error, Result};

/// Test-set results of [`Trainer::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy over the samples (f32 per-example losses, summed in f64).
    pub loss: f32,
    /// Fraction of samples whose largest logit is at the label, in [0, 1] (NaN when the
    /// model is not a classifier: [`Model::logits`] is `None`).
    pub accuracy: f32,
    /// Samples classified correctly (0 when the model is not a classifier).
    pub correct: usize,
    /// Samples evaluated.
    pub total: usize,
}

/// Largest staging or result buffer of one evaluation group; bigger data sets run in
/// several groups (one submission and one readback each).
const MAX_GROUP_BYTES: u64 = 32 << 20;

/// Byte sizes of the buffers one chunk copies (see [`Trainer::strides`]).
struct Strides {
    input: u64,
    labels: u64,
    logits: u64,
    losses: u64,
}

/// Forward outputs of some rows: logits widened to f32 and per-example losses.
struct Outputs {
    // logits: (n, classes) f32
    logits: Vec<f32>,
    // losses: (n,) f32
    losses: Vec<f32>,
}

impl<M: Model> Trainer<M> {
    /// Mean loss and accuracy of the model on every sample of `data`, batched as the
    /// module docs describe: one submission and one readback per group (a single group
    /// for data sets up to tens of thousands of rows of digits' size).
    pub async fn evaluate(&self, data: &dyn Dataset) -> Result<Evaluation> {
        self.check_data("Trainer::evaluate", data)?;
        let n = data.len();
        if n == 0 {
            return Err(Error::Empty {
                what: "evaluation data set",
                shape: vec![0, data.features()],
            });
        }
        let indices: Vec<usize> = (0..n).collect();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        data.gather(&indices, &mut x, &mut y)?;
        let out = self.forward_rows(&x, &y).await?;
        let loss = out.losses.iter().map(|&l| f64::from(l)).sum::<f64>() / n as f64;
        let (accuracy, correct) = match self.model.logits() {
            Some(_) => {
                let predicted = argmax_rows(&out.logits, self.classes());
                let correct = predicted.iter().zip(&y).filter(|(p, l)| p == l).count();
                (correct as f32 / n as f32, correct)
            }
            None => (f32::NAN, 0),
        };
        Ok(Evaluation {
            loss: loss as f32,
            accuracy,
            correct,
            total: n,
        })
    }

    /// Blocking [`Trainer::evaluate`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn evaluate_blocking(&self, data: &dyn Dataset) -> Result<Evaluation> {
        pollster::block_on(self.evaluate(data))
    }

    /// The predicted class (largest logit; the first on ties) of every row of
    /// `x: (n, features)` row-major, n >= 1.
    pub async fn predict(&self, x: &[f32]) -> Result<Vec<u32>> {
        if self.model.logits().is_none() {
            return Err(Error::InvalidArgument(
                "Trainer::predict: the model is not a classifier".into(),
            ));
        }
        let features = self.features();
        if x.is_empty() || !x.len().is_multiple_of(features) {
            return Err(Error::DataLength {
                shape: vec![x.len().div_ceil(features).max(1), features],
                expected: x.len().div_ceil(features).max(1) * features,
                got: x.len(),
            });
        }
        let labels = vec![0u32; x.len() / features];
        let out = self.forward_rows(x, &labels).await?;
        Ok(argmax_rows(&out.logits, self.classes()))
    }

    /// Blocking [`Trainer::predict`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn predict_blocking(&self, x: &[f32]) -> Result<Vec<u32>> {
        pollster::block_on(self.predict(x))
    }

    fn check_data(&self, op: &'static str, data: &dyn Dataset) -> Result<()> {
        let layout = self.model.layout();
        if layout.tokens || layout.targets_per_row != 1 {
            return Err(Error::InvalidArgument(format!(
                "{op}: the model reads token sequences, a data set gives f32 rows"
            )));
        }
        let (features, classes) = (self.features(), self.classes());
        if data.features() != features || data.classes() != classes {
            return Err(Error::shape(
                op,
                format!("a data set of {features} features and {classes} classes"),
                format!("{} features, {} classes", data.features(), data.classes()),
            ));
        }
        Ok(())
    }

    /// Byte strides of one chunk in the upload and result buffers: whole padded
    /// buffers, so every copy is a multiple of 4 bytes.
    fn strides(&self) -> Strides {
        Strides {
            input: self.model.input_buffer().size(),
            labels: self.model.targets().size(),
            logits: self.model.logits().map_or(0, |t| t.buffer().size()),
            losses: self.model.losses().buffer().size(),
        }
    }

    /// Runs the forward on all rows of `x` with `labels`, a group of chunks at a time.
    // x: (n, features) row-major; labels: (n,), each < classes
    async fn forward_rows(&self, x: &[f32], labels: &[u32]) -> Result<Outputs> {
        let (batch, features) = (self.model.layout().batch, self.features());
        crate::ops::softmax_xent::check_labels(labels, self.classes())?;
        let st = self.strides();
        let per_chunk = (st.input + st.labels).max(st.logits + st.losses);
        let rows_per_group = (MAX_GROUP_BYTES / per_chunk).max(1) as usize * batch;
        let mut out = Outputs {
            logits: Vec::with_capacity(labels.len() * self.classes()),
            losses: Vec::with_capacity(labels.len()),
        };
        for (x, labels) in x
            .chunks(rows_per_group * features)
            .zip(labels.chunks(rows_per_group))
        {
            self.forward_group(x, labels, &st, &mut out).await?;
        }
        Ok(out)
    }

    /// One group of chunks: one upload, one command buffer, one readback.
    // x: (n, features) row-major; labels: (n,)
    async fn forward_group(
        &self,
        x: &[f32],
        labels: &[u32],
        st: &Strides,
        out: &mut Outputs,
    ) -> Result<()> {
        let gpu = &self.gpu;
        let (batch, features, classes) =
            (self.model.layout().batch, self.features(), self.classes());
        let input = self.model.input_buffer();
        let label_buf = self.model.targets();
        let (logits, losses) = (self.model.logits(), self.model.losses());
        let n = labels.len();
        let chunks = n.div_ceil(batch);

        // Upload: chunk inputs (rounded to the activation dtype, zero rows after the end,
        // padded to the buffer size), then chunk labels.
        let mut up = Vec::with_capacity(chunks * (st.input + st.labels) as usize);
        let mut rows = vec![0f32; batch * features];
        for c in 0..chunks {
            let r = c * batch..((c + 1) * batch).min(n);
            rows.fill(0.0);
            rows[..r.len() * features].copy_from_slice(&x[r.start * features..r.end * features]);
            let start = up.len();
            up.extend_from_slice(&self.model.encode_inputs(Inputs::Rows(&rows))?);
            up.resize(start + st.input as usize, 0);
        }
        for c in 0..chunks {
            let r = c * batch..((c + 1) * batch).min(n);
            let start = up.len();
            up.extend_from_slice(bytemuck::cast_slice(&labels[r]));
            up.resize(start + st.labels as usize, 0);
        }
        let labels_at = chunks as u64 * st.input;
        let losses_at = chunks as u64 * st.logits;
        let down_size = chunks as u64 * (st.logits + st.losses);
        let (staging, results) = gpu.scoped("allocating evaluation buffers", || {
            let make = |label, size| {
                gpu.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            };
            (
                make("halfgrad eval inputs", up.len() as u64),
                make("halfgrad eval outputs", down_size),
            )
        })?;
        gpu.queue().write_buffer(&staging, 0, &up);

        let mut enc = gpu.encoder("halfgrad evaluate");
        for c in 0..chunks as u64 {
            enc.copy_buffer_to_buffer(&staging, c * st.input, input, 0, st.input);
            enc.copy_buffer_to_buffer(&staging, labels_at + c * st.labels, label_buf, 0, st.labels);
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("halfgrad evaluate"),
                    timestamp_writes: None,
                });
                self.model.graph().encode_forward(&mut pass);
            }
            if let Some(logits) = logits {
                enc.copy_buffer_to_buffer(logits.buffer(), 0, &results, c * st.logits, st.logits);
            }
            enc.copy_buffer_to_buffer(
                losses.buffer(),
                0,
                &results,
                losses_at + c * st.losses,
                st.losses,
            );
        }
        gpu.submit(enc.finish())?;
        let bytes = gpu.read_buffer(&results, down_size).await?;

        for c in 0..chunks {
            let valid = batch.min(n - c * batch);
            if let Some(logits) = logits {
                let dtype = logits.dtype();
                let at = c * st.logits as usize;
                let len = valid * classes * dtype.size_bytes();
                out.logits.extend(dtype.decode(&bytes[at..at + len]));
            }
            let at = (losses_at + c as u64 * st.losses) as usize;
            out.losses
                .extend(crate::DType::F32.decode(&bytes[at..at + valid * 4]));
        }
        Ok(())
    }
}

/// Index of the largest value of each row of `values: (rows, classes)`; the first one on
/// ties; a row of NaNs gives 0.
fn argmax_rows(values: &[f32], classes: usize) -> Vec<u32> {
    values
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] || row[best].is_nan() && !v.is_nan() {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}
