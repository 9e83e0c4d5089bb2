//! The static graph's gradient rules on the GPU (lavapipe in CI) against f64 CPU
//! references and finite differences: a value read by two ops gets the sum of both
//! gradients (whichever op writes first, through the accumulate flag or the scratch + add
//! fallback), a parameter used by two ops likewise, and the first writer overwrites, so a
//! second step over NaN-poisoned gradient buffers gives exactly the first step's
//! gradients. F32 and F16 (both paths), odd sizes. Then the Trainer over a model that is
//! not the MLP, and checkpoint format versions.

mod common;

use common::{gpu, gpus_for_f16, random_vec, rel_err, rng, tol};
use halfgrad::amp::{constant_scale, OverflowFlag, Policy, Precision};
use halfgrad::data::{Dataset, InMemory};
use halfgrad::nn::{
    activation, linear, linear_params, softmax_cross_entropy, Activation, Batch, BatchLayout,
    Graph, GraphBuilder, Inputs, LayerCtx, Mlp, MlpConfig, MlpOptions, Model, ParamId, ParamStore,
    SplitMix64, ValueId, XentLoss,
};
use halfgrad::train::{
    TrainConfig, Trainer, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_V1, CHECKPOINT_VERSION,
};
use halfgrad::{DType, Gpu, Tensor};

// ---------------------------------------------------------------------------------------
// Helpers

fn devices(p: Precision) -> Vec<(&'static str, &'static Gpu)> {
    match p {
        Precision::F16 => gpus_for_f16(),
        _ => vec![("default", gpu())],
    }
}

fn submit(g: &Gpu, f: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut enc = g.encoder("test");
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("test"),
            timestamp_writes: None,
        });
        f(&mut pass);
    }
    g.submit(enc.finish()).unwrap();
}

fn read(t: &Tensor) -> Vec<f32> {
    t.to_f32_vec().unwrap()
}

fn poison(t: &Tensor) {
    t.write_f32(&vec![f32::NAN; t.len()]).unwrap();
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    println!("  {what}: rel err {e:.2e} (tol {tol:.0e})");
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

fn labels(seed: u64, b: usize, classes: usize) -> Vec<u32> {
    let mut r = SplitMix64::new(seed);
    (0..b)
        .map(|_| (r.next_u64() % classes as u64) as u32)
        .collect()
}

/// Rounds like a store in `dtype` (`None`: exact, for finite differences).
fn round(dtype: Option<DType>, v: &[f64]) -> Vec<f64> {
    match dtype {
        Some(d) => v.iter().map(|&x| d.round(x as f32) as f64).collect(),
        None => v.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------
// f64 references. x (B, in), w (out, in), y (B, out).

fn lin(x: &[f64], w: &[f64], bias: &[f64], b: usize, i: usize, o: usize) -> Vec<f64> {
    let mut y = vec![0.0; b * o];
    for r in 0..b {
        for c in 0..o {
            let dot: f64 = (0..i).map(|k| x[r * i + k] * w[c * i + k]).sum();
            y[r * o + c] = dot + bias[c];
        }
    }
    y
}

/// (dx, dW, db) of y = x W^T + b for the gradient dy.
fn lin_back(
    x: &[f64],
    w: &[f64],
    dy: &[f64],
    b: usize,
    i: usize,
    o: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; b * i];
    let mut dw = vec![0.0; o * i];
    let mut db = vec![0.0; o];
    for r in 0..b {
        for c in 0..o {
            let g = dy[r * o + c];
            db[c] += g;
            for k in 0..i {
                dx[r * i + k] += g * w[c * i + k];
                dw[c * i + k] += g * x[r * i + k];
            }
        }
    }
    (dx, dw, db)
}

const S: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
const C: f64 = 0.044715;

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + (S * (x + C * x * x * x)).tanh())
}

fn gelu_grad(x: f64) -> f64 {
    let th = (S * (x + C * x * x * x)).tanh();
    0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * S * (1.0 + 3.0 * C * x * x)
}

/// (mean cross-entropy, dlogits = (softmax - onehot) / B).
fn xent(logits: &[f64], labels: &[u32], b: usize, v: usize) -> (f64, Vec<f64>) {
    let mut loss = 0.0;
    let mut d = vec![0.0; b * v];
    for r in 0..b {
        let row = &logits[r * v..(r + 1) * v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|&z| (z - m).exp()).sum::<f64>().ln();
        loss += lse - row[labels[r] as usize];
        for c in 0..v {
            let onehot = if c == labels[r] as usize { 1.0 } else { 0.0 };
            d[r * v + c] = ((row[c] - lse).exp() - onehot) / b as f64;
        }
    }
    (loss / b as f64, d)
}

// ---------------------------------------------------------------------------------------
// A value used twice:
//   y = x W0^T + b0;  u = gelu(y);  l1 = u W1^T + b1;  l2 = y W2^T + b2
//   loss = xent(l1) + xent(l2)
// y is read by gelu and by the second head, so dy = gelu'(y) du + dl2 W2. With
// `head_first`, the head reading y is added before gelu, so backward reaches gelu first
// (an overwrite-only kernel writes first, the matrix product second: it accumulates in
// f32, goes through scratch in 16-bit); otherwise the matrix product writes first and
// gelu's term goes through scratch.

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    i: usize,
    h: usize,
    v: usize,
}

struct TwoHeads {
    store: ParamStore,
    graph: Graph,
    x: ValueId,
    losses: [XentLoss; 2],
    // w0, b0, w1, b1, w2, b2
    params: Vec<ParamId>,
}

fn two_heads(ctx: &LayerCtx<'_>, d: Dims, head_first: bool, scale: &wgpu::Buffer) -> TwoHeads {
    let mut store = ParamStore::new();
    let mut rng = SplitMix64::new(11);
    let (w0, b0) = linear_params(ctx, &mut store, "0", d.i, d.h, true, &mut rng).unwrap();
    let (w1, b1) = linear_params(ctx, &mut store, "1", d.h, d.v, true, &mut rng).unwrap();
    let (w2, b2) = linear_params(ctx, &mut store, "2", d.h, d.v, true, &mut rng).unwrap();
    let (graph, x, losses) = {
        let mut g = GraphBuilder::new(ctx, &store);
        let x = g.input(&[d.b, d.i], ctx.policy.activation).unwrap();
        let y = linear(&mut g, x, w0, b0).unwrap();
        let (l1, l2) = if head_first {
            let l2 = linear(&mut g, y, w2, b2).unwrap();
            let u = activation(&mut g, y, Activation::Gelu).unwrap();
            (linear(&mut g, u, w1, b1).unwrap(), l2)
        } else {
            let u = activation(&mut g, y, Activation::Gelu).unwrap();
            let l1 = linear(&mut g, u, w1, b1).unwrap();
            (l1, linear(&mut g, y, w2, b2).unwrap())
        };
        let loss1 = softmax_cross_entropy(&mut g, l1, scale).unwrap();
        let loss2 = softmax_cross_entropy(&mut g, l2, scale).unwrap();
        (g.finish().unwrap(), x, [loss1, loss2])
    };
    let params = vec![w0, b0.unwrap(), w1, b1.unwrap(), w2, b2.unwrap()];
    TwoHeads {
        store,
        graph,
        x,
        losses,
        params,
    }
}

/// Loss and parameter gradients of [`two_heads`] in f64, rounding where the GPU stores
/// in `dt` (activations, their gradients, the matrix products' 16-bit weight copies).
fn two_heads_ref(
    d: Dims,
    dt: Option<DType>,
    p: &[Vec<f64>],
    x: &[f64],
    lab: &[[u32; 2]],
) -> (f64, Vec<Vec<f64>>) {
    let Dims { b, i, h, v } = d;
    let r = |t: &[f64]| round(dt, t);
    let (w0, w1, w2) = (r(&p[0]), r(&p[2]), r(&p[4]));
    let y = r(&lin(x, &w0, &p[1], b, i, h));
    let u = r(&y.iter().map(|&t| gelu(t)).collect::<Vec<_>>());
    let l1 = r(&lin(&u, &w1, &p[3], b, h, v));
    let l2 = r(&lin(&y, &w2, &p[5], b, h, v));
    let lab1: Vec<u32> = lab.iter().map(|l| l[0]).collect();
    let lab2: Vec<u32> = lab.iter().map(|l| l[1]).collect();
    let (loss1, dl1) = xent(&l1, &lab1, b, v);
    let (loss2, dl2) = xent(&l2, &lab2, b, v);
    let (dl1, dl2) = (r(&dl1), r(&dl2));
    let (du, dw1, db1) = lin_back(&u, &w1, &dl1, b, h, v);
    let (dy_head, dw2, db2) = lin_back(&y, &w2, &dl2, b, h, v);
    let du = r(&du);
    let dy_gelu: Vec<f64> = du.iter().zip(&y).map(|(g, &t)| g * gelu_grad(t)).collect();
    let dy: Vec<f64> = r(&dy_head)
        .iter()
        .zip(r(&dy_gelu))
        .map(|(a, b)| a + b)
        .collect();
    let dy = r(&dy);
    let (_, dw0, db0) = lin_back(x, &w0, &dy, b, i, h);
    (loss1 + loss2, vec![dw0, db0, dw1, db1, dw2, db2])
}

fn step(g: &Gpu, graph: &Graph) {
    submit(g, |pass| graph.encode_forward_backward(pass));
}

/// Poisons every gradient buffer the graph or the store holds.
fn poison_grads(net: &TwoHeads) {
    for p in net.store.params() {
        poison(&p.grad);
    }
    for (_, grad) in net.graph.tensors() {
        if let Some(grad) = grad {
            poison(grad);
        }
    }
    for s in net.graph.scratch() {
        poison(s);
    }
}

fn check_value_used_twice(g: &Gpu, mode: Precision, head_first: bool, fd: bool) {
    let d = Dims {
        b: 5,
        i: 7,
        h: 9,
        v: 3,
    };
    let policy = Policy::new(mode);
    let dt = policy.activation;
    let flag = OverflowFlag::new(g).unwrap();
    let scale = constant_scale(g, 1.0).unwrap();
    let ctx = LayerCtx::new(g, policy, &flag);
    let net = two_heads(&ctx, d, head_first, &scale);
    let x_host = random_vec(&mut rng(5), d.b * d.i, 1.0);
    net.graph.value(net.x).write_f32(&x_host).unwrap();
    let (lab1, lab2) = (labels(1, d.b, d.v), labels(2, d.b, d.v));
    net.losses[0].set_labels(g, &lab1).unwrap();
    net.losses[1].set_labels(g, &lab2).unwrap();
    poison_grads(&net);
    step(g, &net.graph);

    let mut p: Vec<Vec<f64>> = net
        .params
        .iter()
        .map(|&id| f64s(&read(&net.store.get(id).master)))
        .collect();
    let x = round(Some(dt), &f64s(&x_host));
    let lab: Vec<[u32; 2]> = lab1.iter().zip(&lab2).map(|(&a, &b)| [a, b]).collect();
    let (loss, grads) = two_heads_ref(d, Some(dt), &p, &x, &lab);
    let got_loss = read(net.losses[0].loss())[0] + read(net.losses[1].loss())[0];
    assert_close("loss", &[got_loss], &[loss], tol(dt));
    for (k, &id) in net.params.iter().enumerate() {
        let param = net.store.get(id);
        let got = read(&param.grad);
        // f32 gradients from 16-bit operands: the 16-bit tolerance covers the stored
        // activation gradients they are summed from.
        assert_close(&format!("d{}", param.name), &got, &grads[k], tol(dt));
        if fd {
            // Central differences of the f64 loss: truncation O(h^2), rounding ~1e-16/h.
            let h = 1e-6;
            let mut want = vec![0.0; got.len()];
            for (j, w) in want.iter_mut().enumerate() {
                let orig = p[k][j];
                p[k][j] = orig + h;
                let up = two_heads_ref(d, None, &p, &x, &lab).0;
                p[k][j] = orig - h;
                let down = two_heads_ref(d, None, &p, &x, &lab).0;
                p[k][j] = orig;
                *w = (up - down) / (2.0 * h);
            }
            assert_close(
                &format!("d{} vs finite differences", param.name),
                &got,
                &want,
                1e-3,
            );
        }
    }
    assert!(!flag.is_raised_blocking(g).unwrap(), "no overflow expected");
}

#[test]
fn a_value_used_twice_gets_the_sum_of_both_gradients() {
    for mode in [Precision::F32, Precision::F16] {
        for (path, g) in devices(mode) {
            for head_first in [false, true] {
                println!("{mode} {path} head_first={head_first}");
                check_value_used_twice(g, mode, head_first, mode == Precision::F32);
            }
        }
    }
}

#[test]
fn the_scratch_fallback_runs_only_where_a_kernel_cannot_accumulate() {
    let g = gpu();
    let scale = constant_scale(g, 1.0).unwrap();
    let d = Dims {
        b: 3,
        i: 5,
        h: 7,
        v: 3,
    };
    let scratch = |mode, head_first| {
        let flag = OverflowFlag::new(g).unwrap();
        let ctx = LayerCtx::new(g, Policy::new(mode), &flag);
        let net = two_heads(&ctx, d, head_first, &scale);
        let adds = net.graph.uses_kernel("accumulate/add_into");
        (net.graph.scratch().len(), adds)
    };
    // gelu writes dy second: it can only overwrite, so scratch + add in every precision.
    assert_eq!(scratch(Precision::F32, false), (1, true));
    assert_eq!(scratch(Precision::F16, false), (1, true));
    // The matrix product writes second: it accumulates into f32, needs scratch in f16.
    assert_eq!(scratch(Precision::F32, true), (0, false));
    assert_eq!(scratch(Precision::F16, true), (1, true));
}

#[test]
fn the_first_writer_overwrites_so_two_steps_give_one_steps_gradients() {
    for mode in [Precision::F32, Precision::F16] {
        for (path, g) in devices(mode) {
            for head_first in [false, true] {
                println!("{mode} {path} head_first={head_first}");
                let flag = OverflowFlag::new(g).unwrap();
                let scale = constant_scale(g, 1.0).unwrap();
                let ctx = LayerCtx::new(g, Policy::new(mode), &flag);
                let d = Dims {
                    b: 3,
                    i: 5,
                    h: 7,
                    v: 3,
                };
                let net = two_heads(&ctx, d, head_first, &scale);
                let x_host = random_vec(&mut rng(8), d.b * d.i, 1.0);
                net.graph.value(net.x).write_f32(&x_host).unwrap();
                net.losses[0].set_labels(g, &labels(3, d.b, d.v)).unwrap();
                net.losses[1].set_labels(g, &labels(4, d.b, d.v)).unwrap();
                let grads = |net: &TwoHeads| -> Vec<Vec<f32>> {
                    let params = net.store.params().iter().map(|p| read(&p.grad));
                    let values = net.graph.tensors().filter_map(|(_, g)| g.map(read));
                    params.chain(values).collect()
                };
                poison_grads(&net);
                step(g, &net.graph);
                let first = grads(&net);
                assert!(
                    first.iter().flatten().all(|v| v.is_finite()),
                    "every gradient written over the poison"
                );
                step(g, &net.graph);
                let second = grads(&net);
                for (a, b) in first.iter().zip(&second) {
                    let (a, b): (Vec<u32>, Vec<u32>) = (
                        a.iter().map(|v| v.to_bits()).collect(),
                        b.iter().map(|v| v.to_bits()).collect(),
                    );
                    assert_eq!(a, b, "a second step must not add to the first");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A parameter used twice: the same W (n, n) and b (n) in two Linear ops,
//   y1 = x W^T + b;  y2 = y1 W^T + b;  loss = xent(y2)
// so dW = dy2^T y1 + dy1^T x and db = colsum(dy2) + colsum(dy1).

fn shared_ref(
    n: usize,
    b: usize,
    dt: Option<DType>,
    w: &[f64],
    bias: &[f64],
    x: &[f64],
    lab: &[u32],
) -> (f64, Vec<f64>, Vec<f64>) {
    let r = |t: &[f64]| round(dt, t);
    let wr = r(w);
    let y1 = r(&lin(x, &wr, bias, b, n, n));
    let y2 = r(&lin(&y1, &wr, bias, b, n, n));
    let (loss, dy2) = xent(&y2, lab, b, n);
    let dy2 = r(&dy2);
    let (dy1, dw2, db2) = lin_back(&y1, &wr, &dy2, b, n, n);
    let (_, dw1, db1) = lin_back(x, &wr, &r(&dy1), b, n, n);
    let dw = dw1.iter().zip(&dw2).map(|(a, b)| a + b).collect();
    let db = db1.iter().zip(&db2).map(|(a, b)| a + b).collect();
    (loss, dw, db)
}

#[test]
fn a_parameter_used_twice_gets_the_sum_of_both_gradients() {
    let (n, b) = (7, 5);
    for mode in [Precision::F32, Precision::F16] {
        for (path, g) in devices(mode) {
            println!("{mode} {path}");
            let policy = Policy::new(mode);
            let dt = policy.activation;
            let flag = OverflowFlag::new(g).unwrap();
            let scale = constant_scale(g, 1.0).unwrap();
            let ctx = LayerCtx::new(g, policy, &flag);
            let mut store = ParamStore::new();
            let (w, bias) =
                linear_params(&ctx, &mut store, "0", n, n, true, &mut SplitMix64::new(3)).unwrap();
            let (graph, x, loss) = {
                let mut gb = GraphBuilder::new(&ctx, &store);
                let x = gb.input(&[b, n], dt).unwrap();
                let y1 = linear(&mut gb, x, w, bias).unwrap();
                let y2 = linear(&mut gb, y1, w, bias).unwrap();
                let loss = softmax_cross_entropy(&mut gb, y2, &scale).unwrap();
                (gb.finish().unwrap(), x, loss)
            };
            assert!(graph.writes_param_grad(w) && graph.scratch().is_empty());
            let x_host = random_vec(&mut rng(6), b * n, 1.0);
            graph.value(x).write_f32(&x_host).unwrap();
            let lab = labels(7, b, n);
            loss.set_labels(g, &lab).unwrap();
            let (pw, pb) = (store.get(w), store.get(bias.unwrap()));
            poison(&pw.grad);
            poison(&pb.grad);
            step(g, &graph);
            let (wm, bm) = (f64s(&read(&pw.master)), f64s(&read(&pb.master)));
            let xr = round(Some(dt), &f64s(&x_host));
            let (want_loss, dw, db) = shared_ref(n, b, Some(dt), &wm, &bm, &xr, &lab);
            assert_close("loss", &read(loss.loss()), &[want_loss], tol(dt));
            assert_close("dW (two uses)", &read(&pw.grad), &dw, tol(dt));
            assert_close("db (two uses)", &read(&pb.grad), &db, tol(dt));
            if mode == Precision::F32 {
                let h = 1e-6;
                let mut fd = vec![0.0; dw.len()];
                let mut wp = wm.clone();
                for (j, f) in fd.iter_mut().enumerate() {
                    wp[j] = wm[j] + h;
                    let up = shared_ref(n, b, None, &wp, &bm, &xr, &lab).0;
                    wp[j] = wm[j] - h;
                    let down = shared_ref(n, b, None, &wp, &bm, &xr, &lab).0;
                    wp[j] = wm[j];
                    *f = (up - down) / (2.0 * h);
                }
                assert_close("dW vs finite differences", &read(&pw.grad), &fd, 1e-3);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The Trainer runs any Model: a tied-weight regressor-like model that is not a classifier
//   y1 = x W^T + b;  y2 = gelu(y1) W^T + b;  loss = xent(y2)   (W used twice)

#[derive(Debug, Clone, PartialEq)]
struct TiedConfig {
    n: usize,
}

impl std::fmt::Display for TiedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n={}", self.n)
    }
}

impl std::str::FromStr for TiedConfig {
    type Err = halfgrad::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n = s
            .strip_prefix("n=")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| halfgrad::Error::InvalidArgument(format!("tied config `{s}`")))?;
        Ok(TiedConfig { n })
    }
}

#[derive(Debug)]
struct Tied {
    config: TiedConfig,
    store: ParamStore,
    graph: Graph,
    x: ValueId,
    loss: XentLoss,
}

impl Model for Tied {
    type Config = TiedConfig;
    const KIND: &'static str = "tied-test";

    fn build(
        ctx: &LayerCtx<'_>,
        config: &TiedConfig,
        batch: usize,
        seed: u64,
        scale: &wgpu::Buffer,
    ) -> halfgrad::Result<Tied> {
        let n = config.n;
        let mut store = ParamStore::new();
        let (w, b) = linear_params(ctx, &mut store, "w", n, n, true, &mut SplitMix64::new(seed))?;
        let mut g = GraphBuilder::new(ctx, &store);
        let x = g.input(&[batch, n], ctx.policy.activation)?;
        let y1 = linear(&mut g, x, w, b)?;
        let u = activation(&mut g, y1, Activation::Gelu)?;
        let y2 = linear(&mut g, u, w, b)?;
        let loss = softmax_cross_entropy(&mut g, y2, scale)?;
        let graph = g.finish()?;
        Ok(Tied {
            config: config.clone(),
            store,
            graph,
            x,
            loss,
        })
    }
    fn config(&self) -> &TiedConfig {
        &self.config
    }
    fn params(&self) -> &ParamStore {
        &self.store
    }
    fn graph(&self) -> &Graph {
        &self.graph
    }
    fn layout(&self) -> BatchLayout {
        BatchLayout {
            batch: self.loss.batch(),
            inputs_per_row: self.config.n,
            tokens: false,
            targets_per_row: 1,
            classes: self.config.n,
        }
    }
    fn set_batch(&self, batch: &Batch<'_>) -> halfgrad::Result<()> {
        let Inputs::Rows(x) = batch.inputs else {
            return Err(halfgrad::Error::InvalidArgument("rows only".into()));
        };
        self.loss.set_labels(gpu_of(self), batch.targets)?;
        self.graph.value(self.x).write_f32(x)
    }
    fn input_buffer(&self) -> &wgpu::Buffer {
        self.graph.value(self.x).buffer()
    }
    fn encode_inputs(&self, inputs: Inputs<'_>) -> halfgrad::Result<Vec<u8>> {
        let Inputs::Rows(x) = inputs else {
            return Err(halfgrad::Error::InvalidArgument("rows only".into()));
        };
        Ok(self.graph.value(self.x).dtype().encode(x))
    }
    fn targets(&self) -> &Tensor {
        self.loss.labels()
    }
    fn loss(&self) -> &Tensor {
        self.loss.loss()
    }
    fn losses(&self) -> &Tensor {
        self.loss.losses()
    }
}

/// The test models live on the default device.
fn gpu_of(_: &Tied) -> &'static Gpu {
    gpu()
}

#[test]
fn the_trainer_runs_any_model_and_checkpoints_it_with_its_kind() {
    let n = 5;
    let mut r = rng(12);
    let x = random_vec(&mut r, 40 * n, 1.0);
    let y = labels(13, 40, n);
    let data = InMemory::new(x, y, n, n).unwrap();
    let config = TrainConfig {
        batch: 8,
        lr: 1e-2,
        input_noise: 0.0,
        ..TrainConfig::default()
    };
    let mut t = Trainer::<Tied>::with_model(gpu(), config, &TiedConfig { n }, data.len()).unwrap();
    let before = t.evaluate_blocking(&data).unwrap();
    for _ in 0..30 {
        t.step_from(&data).unwrap();
    }
    let after = t.evaluate_blocking(&data).unwrap();
    println!("tied model: loss {} -> {}", before.loss, after.loss);
    assert!(after.loss < before.loss, "training lowers the loss");
    // Not a classifier: loss only.
    assert!(after.accuracy.is_nan() && after.correct == 0 && after.total == 40);
    assert!(t.stats_blocking().unwrap().grad_norm.is_finite());

    let ck = t.checkpoint_blocking().unwrap();
    assert_eq!(ck.meta("model.kind").unwrap(), "tied-test");
    assert_eq!(ck.meta("model").unwrap(), "n=5");
    let back = Trainer::<Tied>::restore_blocking(gpu(), &ck).unwrap();
    assert_eq!(back.evaluate_blocking(&data).unwrap().loss, after.loss);
    // Another model kind is refused, saying which.
    match Trainer::from_checkpoint_blocking(gpu(), &ck) {
        Err(halfgrad::Error::Checkpoint { message, .. }) => {
            assert!(message.contains("tied-test"), "{message}")
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn version_one_checkpoints_load_and_later_versions_are_refused() {
    let data = InMemory::new(
        random_vec(&mut rng(14), 24 * 6, 1.0),
        labels(15, 24, 3),
        6,
        3,
    )
    .unwrap();
    let config = TrainConfig {
        batch: 4,
        ..TrainConfig::default()
    };
    let model = MlpOptions {
        hidden: vec![7],
        ..MlpOptions::default()
    };
    let mut t = Trainer::new_blocking(gpu(), config, &model, &data).unwrap();
    t.step_from(&data).unwrap();
    let ck = t.checkpoint_blocking().unwrap();
    assert_eq!(ck.meta("format").unwrap(), CHECKPOINT_FORMAT);
    assert_eq!(
        ck.meta("format.version").unwrap(),
        CHECKPOINT_VERSION.to_string()
    );

    // As written before format versions: no version, no model kind, the old format.
    let mut v1 = ck.clone();
    v1.metadata.remove("format.version");
    v1.metadata.remove("model.kind");
    v1.set_meta("format", CHECKPOINT_FORMAT_V1);
    let back = Trainer::from_checkpoint_blocking(gpu(), &v1).unwrap();
    assert_eq!(back.config(), t.config());
    assert_eq!(back.steps(), 1);
    let (a, b) = (
        t.evaluate_blocking(&data).unwrap(),
        back.evaluate_blocking(&data).unwrap(),
    );
    assert_eq!(a, b, "a version-1 checkpoint restores the same model");

    let mut later = ck.clone();
    later.set_meta("format.version", CHECKPOINT_VERSION + 1);
    later.set_meta("halfgrad.version", "9.9.9");
    match Trainer::from_checkpoint_blocking(gpu(), &later) {
        Err(halfgrad::Error::Checkpoint { message, .. }) => {
            assert!(
                message.contains("9.9.9") && message.contains("format version 3"),
                "{message}"
            );
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn a_second_graph_with_another_batch_shares_the_parameters() {
    let g = gpu();
    let flag = OverflowFlag::new(g).unwrap();
    let scale = constant_scale(g, 1.0).unwrap();
    let ctx = LayerCtx::new(g, Policy::new(Precision::F16), &flag);
    let config: MlpConfig = "widths=6,9,3;activation=gelu;layer_norm=true"
        .parse()
        .unwrap();
    let (b, n) = (4, 6);
    let mlp = Mlp::new(&ctx, &config, b, 5, &scale).unwrap();
    let x = random_vec(&mut rng(16), b * n, 1.0);
    let y = labels(17, b, 3);
    mlp.set_batch(&x, &y).unwrap();
    mlp.forward().unwrap();
    let logits = mlp.read_logits_blocking().unwrap();
    // One row at a time through a forward-only graph over the same store.
    let (eval, input, loss) =
        Mlp::build_graph(&ctx, &config, mlp.param_store(), 1, &scale, false).unwrap();
    assert_eq!(eval.dispatch_counts().1, 0, "no backward");
    assert!(
        eval.tensors().all(|(_, grad)| grad.is_none()),
        "no gradients"
    );
    for row in 0..b {
        eval.value(input)
            .write_f32(&x[row * n..(row + 1) * n])
            .unwrap();
        loss.set_labels(g, &y[row..row + 1]).unwrap();
        submit(g, |pass| eval.encode_forward(pass));
        let got = read(eval.value(loss.logits()));
        assert_eq!(got, logits[row * 3..(row + 1) * 3], "row {row}");
    }
    // A weight written through the store is what both graphs read.
    let w = &mlp.params()[0];
    w.write_f32(&vec![0.0; w.len()]).unwrap();
    submit(g, |pass| eval.encode_forward(pass));
    mlp.forward().unwrap();
    let last = read(eval.value(loss.logits()));
    assert_eq!(last, mlp.read_logits_blocking().unwrap()[(b - 1) * 3..]);
}

/// Linear + GELU pairs (one per entry of `params` but the last), a Linear head and the
/// loss; `keep`: every value keeps its own gradient buffer.
fn chain(
    ctx: &LayerCtx<'_>,
    store: &ParamStore,
    d: Dims,
    params: &[(ParamId, Option<ParamId>)],
    keep: bool,
    scale: &wgpu::Buffer,
) -> (Graph, ValueId, XentLoss) {
    let mut g = GraphBuilder::new(ctx, store);
    let x = g.input(&[d.b, d.i], ctx.policy.activation).unwrap();
    let mut y = x;
    for (k, &(w, b)) in params.iter().enumerate() {
        y = linear(&mut g, y, w, b).unwrap();
        if keep {
            g.keep_grad(y);
        }
        if k + 1 < params.len() {
            y = activation(&mut g, y, Activation::Gelu).unwrap();
            if keep {
                g.keep_grad(y);
            }
        }
    }
    let loss = softmax_cross_entropy(&mut g, y, scale).unwrap();
    (g.finish().unwrap(), x, loss)
}

#[test]
fn reused_gradient_buffers_give_bit_identical_parameter_gradients() {
    for mode in [Precision::F32, Precision::F16] {
        for (path, g) in devices(mode) {
            println!("{mode} {path}");
            let flag = OverflowFlag::new(g).unwrap();
            let scale = constant_scale(g, 1.0).unwrap();
            let ctx = LayerCtx::new(g, Policy::new(mode), &flag);
            let d = Dims {
                b: 5,
                i: 7,
                h: 9,
                v: 3,
            };
            let mut store = ParamStore::new();
            let mut init = SplitMix64::new(21);
            let widths = [d.i, d.h, d.h, d.h, d.v];
            let params: Vec<_> = widths
                .windows(2)
                .enumerate()
                .map(|(k, w)| {
                    let name = k.to_string();
                    linear_params(&ctx, &mut store, &name, w[0], w[1], true, &mut init).unwrap()
                })
                .collect();
            let x_host = random_vec(&mut rng(22), d.b * d.i, 1.0);
            let y_host = labels(23, d.b, d.v);
            let mut runs = Vec::new();
            for keep in [true, false] {
                let (graph, x, loss) = chain(&ctx, &store, d, &params, keep, &scale);
                graph.value(x).write_f32(&x_host).unwrap();
                loss.set_labels(g, &y_host).unwrap();
                for p in store.params() {
                    poison(&p.grad);
                }
                for grad in graph.grad_buffers() {
                    poison(grad);
                }
                step(g, &graph);
                let grads: Vec<Vec<u32>> = store
                    .params()
                    .iter()
                    .map(|p| read(&p.grad).iter().map(|v| v.to_bits()).collect())
                    .collect();
                assert!(grads
                    .iter()
                    .flatten()
                    .all(|&v| f32::from_bits(v).is_finite()));
                runs.push((graph.grad_buffers().len(), grads));
            }
            let ((kept, want), (pooled, got)) = (&runs[0], &runs[1]);
            assert_eq!(got, want, "gradients through reused buffers");
            // Kept: 6 values of width h and the logits. Reused: two of width h are live
            // at a time (an op's output gradient while it writes its input's), and the
            // logits'.
            assert_eq!((*kept, *pooled), (7, 3));
        }
    }
}
