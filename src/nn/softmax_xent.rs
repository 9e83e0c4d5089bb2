//! Fused softmax + cross-entropy loss over integer class labels, mean over the batch.
//! f32 log-sum-exp whatever the logits' dtype; backward seeded on the GPU by the loss scale.

use super::{batch_width, LayerCtx, Node};
use crate::kernels::Dispatch;
use crate::ops::softmax_xent::{self, check_labels};
use crate::{DType, Error, Gpu, Result, Tensor};

#[derive(Debug)]
pub struct SoftmaxCrossEntropy {
    batch: usize,
    classes: usize,
    // logits: (B, V) activation dtype; backward writes logits.grad
    logits: Node,
    // labels: (B) u32, written by set_labels
    labels: wgpu::Buffer,
    // lse: (B) f32 log-sum-exp saved for backward
    #[allow(dead_code)] // held so the pool does not hand its buffer out again
    lse: Tensor,
    // losses: (B) f32 per-example loss
    losses: Tensor,
    // loss: (1) f32 mean loss
    loss: Tensor,
    forward: [Dispatch; 2],
    backward: Option<Dispatch>,
}

impl SoftmaxCrossEntropy {
    /// The loss over `logits`. `scale` is an f32 storage buffer whose element 0 is the
    /// loss scale that seeds backward (the loss scaler's buffer, or
    /// [`constant_scale`](crate::amp::constant_scale)`(gpu, 1.0)`). Backward writes
    /// `logits.grad` (skipped when the node has none).
    // logits: (B, V) any dtype
    pub fn new(
        ctx: &LayerCtx<'_>,
        logits: &Node,
        scale: &wgpu::Buffer,
    ) -> Result<SoftmaxCrossEntropy> {
        let gpu = ctx.gpu;
        let (batch, classes) = batch_width("softmax_xent", logits)?;
        let labels = gpu.scoped("allocating the label buffer", || {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("halfgrad labels"),
                size: (batch as u64 * 4).div_ceil(16) * 16,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        })?;
        let lse = Tensor::empty(gpu, &[batch], DType::F32)?;
        let losses = Tensor::empty(gpu, &[batch], DType::F32)?;
        let loss = Tensor::empty(gpu, &[1], DType::F32)?;
        let forward = softmax_xent::forward(gpu, &logits.value, &labels, &lse, &losses, &loss)?;
        let backward = match &logits.grad {
            Some(dlogits) => Some(softmax_xent::backward(
                gpu,
                &logits.value,
                &lse,
                &labels,
                scale,
                dlogits,
                ctx.found_inf,
            )?),
            None => None,
        };
        Ok(SoftmaxCrossEntropy {
            batch,
            classes,
            logits: logits.clone(),
            labels,
            lse,
            losses,
            loss,
            forward,
            backward,
        })
    }

    /// Uploads one batch of labels (queued; ordered before the next submission). Every
    /// label must be `< classes`: out-of-range labels give `Error::LabelOutOfRange` here,
    /// on the host, before they reach the GPU.
    // labels: (B)
    pub fn set_labels(&self, gpu: &Gpu, labels: &[u32]) -> Result<()> {
        if labels.len() != self.batch {
            return Err(Error::DataLength {
                shape: vec![self.batch],
                expected: self.batch,
                got: labels.len(),
            });
        }
        check_labels(labels, self.classes)?;
        gpu.check()?;
        gpu.queue()
            .write_buffer(&self.labels, 0, bytemuck::cast_slice(labels));
        Ok(())
    }

    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn classes(&self) -> usize {
        self.classes
    }
    pub fn logits(&self) -> &Node {
        &self.logits
    }
    /// The label buffer (B) u32.
    pub fn labels(&self) -> &wgpu::Buffer {
        &self.labels
    }
    /// Per-example losses (B) f32, written by forward.
    pub fn losses(&self) -> &Tensor {
        &self.losses
    }
    /// The mean loss (1) f32, written by forward.
    pub fn loss(&self) -> &Tensor {
        &self.loss
    }

    /// Records forward: per-row f32 log-sum-exp and loss, then the mean.
    pub fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.forward {
            d.encode(pass);
        }
    }

    /// Records backward: dlogits = (softmax - onehot) * scale[0] / B.
    pub fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(d) = &self.backward {
            d.encode(pass);
        }
    }
}
