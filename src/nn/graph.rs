//! The static graph: a model is built once into a list of prebuilt forward
//! [`Dispatch`]es and, walking its ops in reverse, a list of backward ones. A training
//! step only encodes them: no allocation, no pipeline or bind group, no readback.
//!
//! Building:
//! - [`ParamStore`] owns the parameters, outside any graph, so several graphs (a training
//!   graph, an evaluation graph with another batch size) run over the same tensors.
//! - [`GraphBuilder`] hands out [`ValueId`]s: inputs (no gradient) and op outputs. An op
//!   (a type implementing [`Op`]) builds its forward dispatches when it is added and
//!   records whether its output needs a gradient (it does when any input does or the op
//!   reads a parameter).
//! - [`GraphBuilder::finish`] walks the ops in reverse and asks each for its backward
//!   through [`Backward`]. Gradient buffers exist only for values that need one, in the
//!   value's dtype (activation gradients in the activation dtype; parameter gradients are
//!   the parameters' own f32 `grad`).
//!
//! Gradient lifetimes: once an op's backward is built, the gradients of its outputs are
//! dead (every reader of an output came later in forward, so its backward ran already,
//! and the producer is the last to read the output's gradient). Their buffers go to a
//! free list that later [`Backward::value_grad`] allocations of the same dtype and
//! element count take (a view of the value's shape; the first write overwrites, so
//! nothing is cleared). The dispatches run in order in one compute pass, and wgpu puts a
//! barrier between a read and a later write of a buffer. External and seeded gradients
//! and those kept with [`GraphBuilder::keep_grad`] are never reused, so
//! [`Graph::grad`] of any other value is only meaningful during backward.
//! [`SizePlan::grads`](super::SizePlan::grads) plans the same rule without a GPU.
//!
//! The overwrite / accumulate rule: the first backward write of a gradient buffer (in
//! backward order) overwrites it, every later one adds into it, so a value or a parameter
//! used twice gets the sum of both gradients and no step clears anything. A kernel with
//! an accumulate flag (matrix products into f32, column sums, layer-norm parameter
//! gradients) gets it set; a kernel that can only overwrite writes a scratch buffer and
//! the graph adds it in ([`add_into`]). Under [`GradMode::Accumulate`] every parameter
//! gradient write accumulates (micro-batches; the optimizer clears).

use super::{GradMode, LayerCtx, Param};
use crate::kernels::Dispatch;
use crate::ops::accumulate::add_into;
use crate::tensor::checked_numel;
use crate::{DType, Error, Gpu, Result, Tensor};

/// A value of a graph (an input or an op's output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueId(usize);

/// A parameter of a [`ParamStore`]: its index in state-dict order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParamId(usize);

impl ParamId {
    /// The `index`-th parameter of a store.
    pub fn new(index: usize) -> ParamId {
        ParamId(index)
    }

    pub fn index(self) -> usize {
        self.0
    }
}

/// The parameters of a model, in state-dict order, owned outside any graph.
#[derive(Debug, Default, Clone)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    pub fn new() -> ParamStore {
        ParamStore::default()
    }

    /// Adds a parameter; its name must be new.
    pub fn add(&mut self, param: Param) -> Result<ParamId> {
        if self.find(&param.name).is_some() {
            return Err(Error::InvalidArgument(format!(
                "parameter `{}` is already in the store",
                param.name
            )));
        }
        self.params.push(param);
        Ok(ParamId(self.params.len() - 1))
    }

    pub fn get(&self, id: ParamId) -> &Param {
        &self.params[id.0]
    }

    /// The parameter named `name` (a state-dict name).
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name).map(ParamId)
    }

    /// Every parameter in state-dict order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Every parameter, mutable (write contents; replacing a tensor would detach it from
    /// the graphs built over it).
    pub fn params_mut(&mut self) -> &mut [Param] {
        &mut self.params
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Number of trainable scalars.
    pub fn num_scalars(&self) -> usize {
        self.params.iter().map(Param::len).sum()
    }
}

/// One forward/backward pair of a graph. The forward dispatches are built when the op is
/// added ([`GraphBuilder::push`]); the backward ones when the graph is finished.
pub trait Op: std::fmt::Debug {
    /// Forward, in order.
    fn forward(&self) -> &[Dispatch];
    /// Builds backward: reads the gradients of the op's outputs ([`Backward::grad`]; the
    /// op contributes nothing when none was written) and writes those of its inputs and
    /// parameters through [`Backward::value_grad`] / [`Backward::param_grad`].
    fn backward(&self, grads: &mut Backward<'_>) -> Result<()>;
}

#[derive(Debug)]
struct Value {
    tensor: Tensor,
    /// Reachable from a parameter: backward produces its gradient.
    needs_grad: bool,
    /// An external gradient buffer (a standalone layer's input node): written like an
    /// own one.
    grad: Option<Tensor>,
    /// The gradient was given from outside ([`GraphBuilder::seed_grad`]): backward
    /// starts from it and writes it never.
    seeded: bool,
    /// The gradient buffer is never handed to another value ([`GraphBuilder::keep_grad`]).
    keep_grad: bool,
}

/// Builds a [`Graph`] over a [`ParamStore`].
pub struct GraphBuilder<'a> {
    ctx: LayerCtx<'a>,
    params: &'a ParamStore,
    values: Vec<Value>,
    ops: Vec<Box<dyn Op>>,
    /// Per op: the values made by [`GraphBuilder::output`] since the previous op (its
    /// outputs; a value made early counts for an earlier op, which frees it later).
    op_outputs: Vec<Vec<ValueId>>,
    /// Outputs made since the last [`GraphBuilder::push`].
    pending_outputs: Vec<ValueId>,
    /// Op outputs and saved buffers, in order of creation ([`Graph::forward_buffers`]).
    forward_buffers: Vec<Tensor>,
    /// Another graph's forward buffers not yet taken
    /// ([`GraphBuilder::borrow_forward_buffers`]).
    donors: Vec<Tensor>,
    /// The f32 scratch the graph's widened products share.
    wide: WideScratch,
}

/// The f32 scratch that every widened matrix product of a graph shares
/// (`ops::matmul::widen`): a product writes it and reads it back in two consecutive
/// dispatches, and forward and backward dispatches run in order, so one buffer (the
/// largest asked for) serves them all. Borrowed by a forward-only graph beside the
/// training graph with its other buffers.
#[derive(Debug, Default)]
struct WideScratch {
    /// Buffers this graph allocated (in its scratch), largest last.
    own: Vec<Tensor>,
    /// A donor graph's buffers (held by the donor too).
    borrowed: Vec<Tensor>,
}

impl WideScratch {
    /// A buffer of at least `len` f32 elements: one already here, else a new one.
    fn get(&mut self, gpu: &Gpu, len: usize) -> Result<Tensor> {
        let found = self
            .own
            .iter()
            .chain(&self.borrowed)
            .find(|t| t.len() >= len);
        if let Some(t) = found {
            return Ok(t.clone());
        }
        let t = Tensor::empty(gpu, &[len], DType::F32)?;
        self.own.push(t.clone());
        Ok(t)
    }
}

impl<'a> GraphBuilder<'a> {
    /// An empty graph over `params`; `ctx` gives the device, the precision policy, the
    /// found-inf flag that 16-bit stores raise and the parameter-gradient mode.
    pub fn new(ctx: &LayerCtx<'a>, params: &'a ParamStore) -> GraphBuilder<'a> {
        GraphBuilder {
            ctx: *ctx,
            params,
            values: Vec::new(),
            ops: Vec::new(),
            op_outputs: Vec::new(),
            pending_outputs: Vec::new(),
            forward_buffers: Vec::new(),
            donors: Vec::new(),
            wide: WideScratch::default(),
        }
    }

    /// Takes op outputs and saved buffers ([`GraphBuilder::output`],
    /// [`GraphBuilder::saved`]) from `donor`'s forward buffers of the same dtype and
    /// element count (each at most once) instead of allocating them; what finds none is
    /// allocated. For a forward-only graph beside a training graph (evaluation at the
    /// training batch): neither graph keeps contents across submissions (a forward
    /// writes every buffer before reading it, and a step runs forward and backward in
    /// one pass), so the two must only never run in the same pass. Whatever a caller
    /// reads after a run (a loss) is overwritten by the other graph's next run.
    pub fn borrow_forward_buffers(&mut self, donor: &Graph) {
        self.donors.extend(donor.forward_buffers.iter().cloned());
        self.wide
            .borrowed
            .extend(donor.wide_scratch.iter().cloned());
    }

    /// The graph's shared f32 scratch for widened matrix products, at least `len`
    /// elements (`ops::matmul::widened_scratch_len`).
    pub fn wide_scratch(&mut self, len: usize) -> Result<Tensor> {
        self.wide.get(self.ctx.gpu, len)
    }

    /// A forward buffer: a donor's ([`GraphBuilder::borrow_forward_buffers`]) seen with
    /// `shape`, else a new one.
    fn forward_buffer(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let numel = checked_numel(shape);
        let found = self
            .donors
            .iter()
            .position(|t| t.dtype() == dtype && Some(t.len()) == numel);
        let tensor = match found {
            Some(i) => self.donors.remove(i).reshape(shape)?,
            None => Tensor::empty(self.ctx.gpu, shape, dtype)?,
        };
        self.forward_buffers.push(tensor.clone());
        Ok(tensor)
    }

    /// A buffer an op's forward writes and its backward reads that is not a value (no
    /// gradient; e.g. attention probabilities): like an output, it may be a donor's.
    pub fn saved(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.forward_buffer(shape, dtype)
    }

    pub fn ctx(&self) -> &LayerCtx<'a> {
        &self.ctx
    }

    pub fn gpu(&self) -> &'a Gpu {
        self.ctx.gpu
    }

    pub fn param(&self, id: ParamId) -> &'a Param {
        self.params.get(id)
    }

    /// A model input of `shape` in `dtype`, written from the host; no gradient.
    pub fn input(&mut self, shape: &[usize], dtype: DType) -> Result<ValueId> {
        let tensor = Tensor::empty(self.ctx.gpu, shape, dtype)?;
        Ok(self.push_value(tensor, false, None))
    }

    /// An existing tensor as an input. With `grad`, backward writes the gradient of the
    /// loss with respect to it into `grad` (first writer overwrites), as for an op output.
    pub fn external(&mut self, tensor: &Tensor, grad: Option<&Tensor>) -> Result<ValueId> {
        if let Some(g) = grad {
            same_layout("external gradient", tensor, g)?;
        }
        Ok(self.push_value(tensor.clone(), grad.is_some(), grad.cloned()))
    }

    /// A new output value of an op (what [`Op`] constructors call). `needs_grad`: the op
    /// reads a parameter or an input that needs a gradient ([`GraphBuilder::needs_grad`]).
    pub fn output(&mut self, shape: &[usize], dtype: DType, needs_grad: bool) -> Result<ValueId> {
        let tensor = self.forward_buffer(shape, dtype)?;
        let id = self.push_value(tensor, needs_grad, None);
        self.pending_outputs.push(id);
        Ok(id)
    }

    /// Keeps the gradient buffer of `id` for `id` alone, so that [`Graph::grad`] holds
    /// it after a step (other gradient buffers are reused once their value's producer
    /// has run backward).
    pub fn keep_grad(&mut self, id: ValueId) {
        self.values[id.0].keep_grad = true;
    }

    /// Gives the gradient of `id` from outside (the caller writes `grad` before running
    /// backward): backward starts from it instead of from the loss.
    pub fn seed_grad(&mut self, id: ValueId, grad: &Tensor) -> Result<()> {
        let v = &mut self.values[id.0];
        same_layout("seeded gradient", &v.tensor, grad)?;
        v.grad = Some(grad.clone());
        v.seeded = true;
        Ok(())
    }

    fn push_value(&mut self, tensor: Tensor, needs_grad: bool, grad: Option<Tensor>) -> ValueId {
        self.values.push(Value {
            tensor,
            needs_grad,
            grad,
            seeded: false,
            keep_grad: false,
        });
        ValueId(self.values.len() - 1)
    }

    /// The tensor of a value.
    pub fn value(&self, id: ValueId) -> &Tensor {
        &self.values[id.0].tensor
    }

    /// Whether backward produces the gradient of `id`.
    pub fn needs_grad(&self, id: ValueId) -> bool {
        self.values[id.0].needs_grad
    }

    /// Appends an op whose forward dispatches are built.
    pub fn push(&mut self, op: impl Op + 'static) {
        self.ops.push(Box::new(op));
        self.op_outputs
            .push(std::mem::take(&mut self.pending_outputs));
    }

    /// The graph with its backward: ops in reverse, each gradient write told whether it
    /// is the first (overwrite) or a later one (accumulate). Allocates the gradient
    /// buffers (reusing dead ones: see the module docs) and the scratch the fallback
    /// needs; builds every backward dispatch.
    pub fn finish(self) -> Result<Graph> {
        let GraphBuilder {
            ctx,
            params,
            values,
            ops,
            op_outputs,
            pending_outputs: _,
            forward_buffers,
            donors: _,
            wide,
        } = self;
        let param_written = vec![ctx.grad_mode == GradMode::Accumulate; params.len()];
        let mut b = Backward {
            ctx,
            params,
            values: values
                .into_iter()
                .map(|v| GradState {
                    written: v.seeded,
                    owned: false,
                    value: v,
                })
                .collect(),
            param_written,
            param_used: vec![false; params.len()],
            free_scratch: Vec::new(),
            scratch: Vec::new(),
            free_grads: Vec::new(),
            temporaries: Vec::new(),
            wide,
            dispatches: Vec::new(),
        };
        for (op, outputs) in ops.iter().zip(&op_outputs).rev() {
            op.backward(&mut b)?;
            b.release(outputs);
        }
        let mut scratch = b.scratch;
        scratch.extend(b.wide.own.iter().cloned());
        Ok(Graph {
            values: b.values.into_iter().map(|s| s.into_graph_value()).collect(),
            ops,
            backward: b.dispatches,
            scratch,
            params_written: b.param_used,
            forward_buffers,
            wide_scratch: b.wide.own,
        })
    }

    /// The graph without backward (evaluation, sampling): no gradient buffers.
    pub fn finish_forward(self) -> Graph {
        let n_params = self.params.len();
        Graph {
            values: self
                .values
                .into_iter()
                .map(|v| GraphValue {
                    tensor: v.tensor,
                    grad: None,
                })
                .collect(),
            ops: self.ops,
            backward: Vec::new(),
            scratch: self.wide.own.clone(),
            params_written: vec![false; n_params],
            forward_buffers: self.forward_buffers,
            wide_scratch: self.wide.own,
        }
    }
}

fn same_layout(what: &'static str, value: &Tensor, grad: &Tensor) -> Result<()> {
    if value.shape() != grad.shape() {
        return Err(Error::shape(
            what,
            format!("{:?}", value.shape()),
            format!("{:?}", grad.shape()),
        ));
    }
    if value.dtype() != grad.dtype() {
        return Err(Error::DTypeMismatch {
            op: what,
            expected: format!("{} like its value", value.dtype()),
            got: grad.dtype(),
        });
    }
    Ok(())
}

#[derive(Debug)]
struct GradState {
    value: Value,
    /// Some backward write (or the seed) has put a gradient into the buffer.
    written: bool,
    /// Backward allocated the buffer (not external, not seeded): reusable once dead.
    owned: bool,
}

impl GradState {
    fn into_graph_value(self) -> GraphValue {
        GraphValue {
            tensor: self.value.tensor,
            grad: self.value.grad,
        }
    }
}

/// Where one backward kernel writes (a term of) a gradient. Pass it back to
/// [`Backward::commit`] after pushing the kernel's dispatch.
#[must_use = "commit the write after pushing the kernel that makes it"]
#[derive(Debug)]
pub struct GradWrite {
    /// The buffer the kernel writes.
    pub tensor: Tensor,
    /// Whether the kernel adds into `tensor` (else it overwrites it).
    pub accumulate: bool,
    /// `Some(gradient)` when `tensor` is scratch that [`Backward::commit`] adds into it.
    into: Option<Tensor>,
}

/// The state of backward generation that [`Op::backward`] writes through.
pub struct Backward<'a> {
    ctx: LayerCtx<'a>,
    params: &'a ParamStore,
    values: Vec<GradState>,
    /// Per parameter: its gradient already holds a term (or accumulation mode).
    param_written: Vec<bool>,
    /// Per parameter: this graph writes its gradient.
    param_used: Vec<bool>,
    /// Scratch buffers not in use (reused: their adds run before the next write).
    free_scratch: Vec<Tensor>,
    /// Every scratch buffer (held for the dispatches that bind them).
    scratch: Vec<Tensor>,
    /// Gradient buffers of dead values (their producer's backward is built).
    free_grads: Vec<Tensor>,
    /// The buffers handed out by [`Backward::temporaries`] (also in `scratch`).
    temporaries: Vec<Tensor>,
    /// The forward's shared widened-product scratch, shared on.
    wide: WideScratch,
    dispatches: Vec<Dispatch>,
}

impl<'a> Backward<'a> {
    pub fn ctx(&self) -> &LayerCtx<'a> {
        &self.ctx
    }

    pub fn gpu(&self) -> &'a Gpu {
        self.ctx.gpu
    }

    /// The gradient of `id` (complete: every op reading `id` came later in forward, so
    /// its backward already ran), or `None` when nothing wrote one.
    pub fn grad(&self, id: ValueId) -> Option<&Tensor> {
        let s = &self.values[id.0];
        if s.written {
            s.value.grad.as_ref()
        } else {
            None
        }
    }

    /// Whether the gradient of `id` is wanted.
    pub fn needs_grad(&self, id: ValueId) -> bool {
        self.values[id.0].value.needs_grad
    }

    /// Where to write a term of the gradient of value `id`, or `None` when it needs none.
    /// `can_accumulate`: the kernel has an accumulate flag for this output. The first
    /// write overwrites; a later one accumulates, or goes to scratch that
    /// [`Backward::commit`] adds in.
    pub fn value_grad(&mut self, id: ValueId, can_accumulate: bool) -> Result<Option<GradWrite>> {
        let gpu = self.ctx.gpu;
        let s = &mut self.values[id.0];
        if !s.value.needs_grad {
            return Ok(None);
        }
        let grad = match &s.value.grad {
            Some(g) => g.clone(),
            None => {
                let (shape, dtype) = (s.value.tensor.shape(), s.value.tensor.dtype());
                let numel = s.value.tensor.len();
                let free = self
                    .free_grads
                    .iter()
                    .position(|t| t.dtype() == dtype && t.len() == numel);
                let g = match free {
                    Some(i) => self.free_grads.swap_remove(i).reshape(shape)?,
                    None => Tensor::empty(gpu, shape, dtype)?,
                };
                s.value.grad = Some(g.clone());
                s.owned = true;
                g
            }
        };
        let first = !s.written;
        s.written = true;
        self.target(grad, first, can_accumulate).map(Some)
    }

    /// Where to write a term of a parameter's f32 gradient (as [`Backward::value_grad`]).
    pub fn param_grad(&mut self, id: ParamId, can_accumulate: bool) -> Result<GradWrite> {
        let first = !self.param_written[id.0];
        self.param_written[id.0] = true;
        self.param_used[id.0] = true;
        let grad = self.params.get(id).grad.clone();
        self.target(grad, first, can_accumulate)
    }

    /// Whether the next write of a parameter's gradient would accumulate (for kernels
    /// with one accumulate flag for several parameters).
    pub fn param_accumulates(&self, id: ParamId) -> bool {
        self.param_written[id.0]
    }

    fn target(&mut self, grad: Tensor, first: bool, can_accumulate: bool) -> Result<GradWrite> {
        if first || can_accumulate {
            return Ok(GradWrite {
                tensor: grad,
                accumulate: !first,
                into: None,
            });
        }
        let found = self
            .free_scratch
            .iter()
            .position(|t| t.shape() == grad.shape() && t.dtype() == grad.dtype());
        let scratch = match found {
            Some(i) => self.free_scratch.swap_remove(i),
            None => {
                let t = Tensor::empty(self.ctx.gpu, grad.shape(), grad.dtype())?;
                self.scratch.push(t.clone());
                t
            }
        };
        Ok(GradWrite {
            tensor: scratch,
            accumulate: false,
            into: Some(grad),
        })
    }

    /// After an op's backward: the gradients of its `outputs` are dead (every reader
    /// ran backward before it), so their buffers may hold later values' gradients.
    fn release(&mut self, outputs: &[ValueId]) {
        for id in outputs {
            let s = &self.values[id.0];
            if s.owned && !s.value.keep_grad {
                if let Some(g) = &s.value.grad {
                    self.free_grads.push(g.clone());
                }
            }
        }
    }

    /// `count` distinct buffers of `shape` and `dtype` for values that live only between
    /// one op's own dispatches (a two-pass reduction's partial sums): the op pushes every
    /// dispatch that writes and reads them at once, and backward dispatches run in order,
    /// so all ops share them (by shape and dtype). Allocated here, held by the graph.
    pub fn temporaries(
        &mut self,
        shape: &[usize],
        dtype: DType,
        count: usize,
    ) -> Result<Vec<Tensor>> {
        let mut out: Vec<Tensor> = self
            .temporaries
            .iter()
            .filter(|t| t.shape() == shape && t.dtype() == dtype)
            .take(count)
            .cloned()
            .collect();
        while out.len() < count {
            let t = Tensor::empty(self.ctx.gpu, shape, dtype)?;
            self.temporaries.push(t.clone());
            self.scratch.push(t.clone());
            out.push(t);
        }
        Ok(out)
    }

    /// The graph's shared f32 scratch for widened matrix products, at least `len`
    /// elements (the forward's: see [`GraphBuilder::wide_scratch`]).
    pub fn wide_scratch(&mut self, len: usize) -> Result<Tensor> {
        self.wide.get(self.ctx.gpu, len)
    }

    /// Appends a backward dispatch.
    pub fn push(&mut self, dispatch: Dispatch) {
        self.dispatches.push(dispatch);
    }

    /// Appends several backward dispatches.
    pub fn extend(&mut self, dispatches: impl IntoIterator<Item = Dispatch>) {
        self.dispatches.extend(dispatches);
    }

    /// Completes a write after the kernel making it was pushed: a scratch write gets its
    /// add into the gradient.
    pub fn commit(&mut self, write: GradWrite) -> Result<()> {
        if let Some(grad) = write.into {
            let add = add_into(self.ctx.gpu, &write.tensor, &grad, self.ctx.found_inf)?;
            self.dispatches.push(add);
            self.free_scratch.push(write.tensor);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct GraphValue {
    tensor: Tensor,
    grad: Option<Tensor>,
}

/// A finished graph: forward and backward as prebuilt dispatches. It holds every tensor
/// its dispatches bind (a dropped tensor returns its buffer to the pool).
#[derive(Debug)]
pub struct Graph {
    values: Vec<GraphValue>,
    ops: Vec<Box<dyn Op>>,
    backward: Vec<Dispatch>,
    scratch: Vec<Tensor>,
    params_written: Vec<bool>,
    /// Op outputs and saved buffers (what another graph may borrow).
    forward_buffers: Vec<Tensor>,
    /// The widened products' shared scratch this graph allocated (also in `scratch`;
    /// another graph may borrow it).
    wide_scratch: Vec<Tensor>,
}

impl Graph {
    /// Records forward (every op in order) into the caller's pass.
    pub fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for op in &self.ops {
            for d in op.forward() {
                d.encode(pass);
            }
        }
    }

    /// Records backward (built in reverse op order) into the caller's pass.
    pub fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.backward {
            d.encode(pass);
        }
    }

    /// Records forward then backward.
    pub fn encode_forward_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.encode_forward(pass);
        self.encode_backward(pass);
    }

    /// The tensor of a value.
    pub fn value(&self, id: ValueId) -> &Tensor {
        &self.values[id.0].tensor
    }

    /// The gradient buffer of a value (`None` when backward writes none). After a step
    /// it holds the value's gradient only when the value is an input with an external
    /// or seeded gradient or was kept ([`GraphBuilder::keep_grad`]); another value's
    /// buffer may have been reused for an earlier value's gradient.
    pub fn grad(&self, id: ValueId) -> Option<&Tensor> {
        self.values[id.0].grad.as_ref()
    }

    /// Every value's tensor and gradient buffer (several values may share one gradient
    /// buffer: count memory with [`Graph::grad_buffers`]).
    pub fn tensors(&self) -> impl Iterator<Item = (&Tensor, Option<&Tensor>)> {
        self.values.iter().map(|v| (&v.tensor, v.grad.as_ref()))
    }

    /// The distinct gradient buffers of the values (each once), scratch not included.
    pub fn grad_buffers(&self) -> Vec<&Tensor> {
        let mut out: Vec<&Tensor> = Vec::new();
        for g in self.values.iter().filter_map(|v| v.grad.as_ref()) {
            if !out.iter().any(|t| t.buffer() == g.buffer()) {
                out.push(g);
            }
        }
        out
    }

    /// Op outputs and saved buffers, in order of creation (what
    /// [`GraphBuilder::borrow_forward_buffers`] lends).
    pub fn forward_buffers(&self) -> &[Tensor] {
        &self.forward_buffers
    }

    /// Scratch gradient buffers of the add fallback and the ops' backward temporaries
    /// ([`Backward::temporaries`]).
    pub fn scratch(&self) -> &[Tensor] {
        &self.scratch
    }

    /// Whether any forward or backward dispatch runs a kernel whose name starts with
    /// `prefix` (e.g. `ops::matmul::COOP.name`).
    pub fn uses_kernel(&self, prefix: &str) -> bool {
        let forward = self.ops.iter().flat_map(|op| op.forward());
        forward
            .chain(&self.backward)
            .any(|d| d.label.starts_with(prefix))
    }

    /// Whether backward writes the gradient of the store's parameter `id`.
    pub fn writes_param_grad(&self, id: ParamId) -> bool {
        self.params_written.get(id.0).copied().unwrap_or(false)
    }

    /// Number of forward and backward dispatches.
    pub fn dispatch_counts(&self) -> (usize, usize) {
        let forward = self.ops.iter().map(|op| op.forward().len()).sum();
        (forward, self.backward.len())
    }
}
