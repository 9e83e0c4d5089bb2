//! Fused softmax + cross-entropy loss over integer class labels, mean over the batch.
//! f32 log-sum-exp whatever the logits' dtype; backward seeded on the GPU by the loss
//! scale. [`softmax_cross_entropy`] is the graph op (the root of backward);
//! [`SoftmaxCrossEntropy`] the same op as a standalone layer.

use super::graph::{Backward, Graph, GraphBuilder, Op, ParamStore, ValueId};
use super::{batch_width, LayerCtx, Node};
use crate::kernels::Dispatch;
use crate::ops::softmax_xent::{self, check_labels};
use crate::{DType, Error, Gpu, Result, Tensor};

/// What a model keeps of its loss op: the label buffer it fills and the loss tensors.
#[derive(Debug, Clone)]
pub struct XentLoss {
    batch: usize,
    classes: usize,
    // logits: (B, V) activation dtype
    logits: ValueId,
    // labels: (B) u32, written by set_labels
    // TODO(graph): a DType::U32 graph input once tensors have one (helper B's branch).
    labels: wgpu::Buffer,
    // losses: (B) f32 per-example loss
    losses: Tensor,
    // loss: (1) f32 mean loss
    loss: Tensor,
}

impl XentLoss {
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
    /// The logits value the loss reads.
    pub fn logits(&self) -> ValueId {
        self.logits
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
}

/// The graph op of the loss.
#[derive(Debug)]
struct XentOp {
    // logits: (B, V)
    logits: ValueId,
    logits_value: Tensor,
    labels: wgpu::Buffer,
    // scale: f32 buffer whose element 0 seeds backward
    scale: wgpu::Buffer,
    // lse: (B) f32 log-sum-exp saved for backward
    lse: Tensor,
    forward: [Dispatch; 2],
}

/// The mean softmax cross-entropy of `logits` against labels the caller writes with
/// [`XentLoss::set_labels`]. Its backward is the root of the graph's: dlogits =
/// (softmax - onehot) * scale[0] / B, where `scale` is an f32 storage buffer (the loss
/// scaler's, or [`constant_scale`](crate::amp::constant_scale)`(gpu, 1.0)`).
// logits: (B, V) any dtype
pub fn softmax_cross_entropy(
    g: &mut GraphBuilder<'_>,
    logits: ValueId,
    scale: &wgpu::Buffer,
) -> Result<XentLoss> {
    let gpu = g.gpu();
    let logits_value = g.value(logits).clone();
    let (batch, classes) = match logits_value.shape() {
        [b, v] => (*b, *v),
        other => {
            return Err(Error::shape(
                "softmax_xent",
                "(batch, features)",
                format!("{other:?}"),
            ))
        }
    };
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
    let losses = g.output(&[batch], DType::F32, false)?;
    let loss = g.output(&[1], DType::F32, false)?;
    let (losses, loss) = (g.value(losses).clone(), g.value(loss).clone());
    let forward = softmax_xent::forward(gpu, &logits_value, &labels, &lse, &losses, &loss)?;
    g.push(XentOp {
        logits,
        logits_value,
        labels: labels.clone(),
        scale: scale.clone(),
        lse,
        forward,
    });
    Ok(XentLoss {
        batch,
        classes,
        logits,
        labels,
        losses,
        loss,
    })
}

impl Op for XentOp {
    fn forward(&self) -> &[Dispatch] {
        &self.forward
    }

    fn backward(&self, b: &mut Backward<'_>) -> Result<()> {
        // The root: seeded by the scale, not by a gradient of the loss.
        if let Some(dlogits) = b.value_grad(self.logits, false)? {
            let found_inf = b.ctx().found_inf;
            let d = softmax_xent::backward(
                b.gpu(),
                &self.logits_value,
                &self.lse,
                &self.labels,
                &self.scale,
                &dlogits.tensor,
                found_inf,
            )?;
            b.push(d);
            b.commit(dlogits)?;
        }
        Ok(())
    }
}

/// The loss on its own: the [`softmax_cross_entropy`] op in a one-op graph over a
/// [`Node`]. Backward writes `logits.grad` (skipped when the node has none).
#[derive(Debug)]
pub struct SoftmaxCrossEntropy {
    loss: XentLoss,
    // logits: (B, V) activation dtype; backward writes logits.grad
    logits: Node,
    graph: Graph,
}

impl SoftmaxCrossEntropy {
    /// The loss over `logits`; `scale` as in [`softmax_cross_entropy`].
    // logits: (B, V) any dtype
    pub fn new(
        ctx: &LayerCtx<'_>,
        logits: &Node,
        scale: &wgpu::Buffer,
    ) -> Result<SoftmaxCrossEntropy> {
        batch_width("softmax_xent", logits)?;
        let store = ParamStore::new();
        let mut g = GraphBuilder::new(ctx, &store);
        let x = g.external(&logits.value, logits.grad.as_ref())?;
        let loss = softmax_cross_entropy(&mut g, x, scale)?;
        Ok(SoftmaxCrossEntropy {
            loss,
            logits: logits.clone(),
            graph: g.finish()?,
        })
    }

    /// See [`XentLoss::set_labels`].
    // labels: (B)
    pub fn set_labels(&self, gpu: &Gpu, labels: &[u32]) -> Result<()> {
        self.loss.set_labels(gpu, labels)
    }

    pub fn batch(&self) -> usize {
        self.loss.batch()
    }
    pub fn classes(&self) -> usize {
        self.loss.classes()
    }
    pub fn logits(&self) -> &Node {
        &self.logits
    }
    /// The label buffer (B) u32.
    pub fn labels(&self) -> &wgpu::Buffer {
        self.loss.labels()
    }
    /// Per-example losses (B) f32, written by forward.
    pub fn losses(&self) -> &Tensor {
        self.loss.losses()
    }
    /// The mean loss (1) f32, written by forward.
    pub fn loss(&self) -> &Tensor {
        self.loss.loss()
    }

    /// Records forward: per-row f32 log-sum-exp and loss, then the mean.
    pub fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.graph.encode_forward(pass);
    }

    /// Records backward: dlogits = (softmax - onehot) * scale[0] / B.
    pub fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.graph.encode_backward(pass);
    }
}
