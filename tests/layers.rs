//! Layers on the GPU (lavapipe in CI) against f64 CPU references: every layer's forward
//! and backward on odd sizes in F32, F16 (both paths) and BF16 mode; a finite-difference
//! check of a whole MLP's gradient; f16 / bf16 gradients against f32; the f32 islands
//! (softmax, loss, layer-norm statistics) under inputs that would overflow f16; typed
//! errors; and one submission, no readback, per forward + backward.

mod common;

use common::reference::{
    act_grad_ref, act_ref, f64s, linear_back_ref, linear_ref, ln_back_ref, ln_ref, mlp_loss_ref,
    xent_ref,
};
use common::{
    gpu, gpus_for_f16, random_vec, rel_err, rng, rounded, submit, submit_with, tol, TOL_F32,
};
use halfgrad::amp::{constant_scale, OverflowFlag, Policy, Precision};
use halfgrad::nn::{
    Activation, ActivationLayer, GradMode, Layer, LayerCtx, LayerNorm, Linear, Mlp, MlpConfig,
    Node, SoftmaxCrossEntropy, SplitMix64,
};
use halfgrad::{DType, Error, Gpu, GpuOptions, Tensor};

// ---------------------------------------------------------------------------------------
// Helpers

/// The devices a mode is tested on: both f16 paths for F16, the default device otherwise.
fn devices(p: Precision) -> Vec<(&'static str, &'static Gpu)> {
    match p {
        Precision::F16 => gpus_for_f16(),
        _ => vec![("default", gpu())],
    }
}

const MODES: [Precision; 3] = [Precision::F32, Precision::F16, Precision::BF16];

/// An input node holding `values` (rounded to `dtype`) with a NaN-poisoned gradient.
fn input_node(g: &Gpu, shape: &[usize], values: &[f32], dtype: DType) -> Node {
    Node {
        value: Tensor::from_f32(g, shape, values, dtype).unwrap(),
        grad: Some(Tensor::full(g, shape, dtype, f32::NAN).unwrap()),
    }
}

fn poison(t: &Tensor) {
    t.write_f32(&vec![f32::NAN; t.len()]).unwrap();
}

fn read(t: &Tensor) -> Vec<f32> {
    t.to_f32_vec().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    println!("  {what}: rel err {e:.2e} (tol {tol:.0e})");
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

fn random_labels(seed: u64, b: usize, classes: usize) -> Vec<u32> {
    let mut r = SplitMix64::new(seed);
    (0..b)
        .map(|_| (r.next_u64() % classes as u64) as u32)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Layers, one at a time

#[test]
fn linear_forward_and_backward_match_f64() {
    // (batch, in, out): odd sizes, each of 1 / 3 / 17 and 5 / 33 / 130; 2500 rows take
    // the two-pass bias gradient (partial sums held by the graph).
    let cases = [
        (1, 5, 33),
        (3, 33, 130),
        (17, 130, 5),
        (17, 5, 5),
        (2500, 3, 37),
    ];
    for mode in MODES {
        for (path, g) in devices(mode) {
            for (ci, &(b, i, o)) in cases.iter().enumerate() {
                for bias in [true, false] {
                    println!("linear {mode} {path} B={b} in={i} out={o} bias={bias}");
                    check_linear(g, mode, b, i, o, bias, 100 + ci as u64);
                }
            }
        }
    }
}

fn check_linear(g: &Gpu, mode: Precision, b: usize, i: usize, o: usize, bias: bool, seed: u64) {
    let policy = Policy::new(mode);
    let dt = policy.activation;
    let flag = OverflowFlag::new(g).unwrap();
    let ctx = LayerCtx::new(g, policy, &flag);
    let mut r = rng(seed);
    let x_host = random_vec(&mut r, b * i, 1.0);
    let input = input_node(g, &[b, i], &x_host, dt);
    let lin = Linear::new(&ctx, &input, "4", i, o, bias, &mut SplitMix64::new(seed)).unwrap();

    // Init like nn.Linear: U(-1/sqrt(in), 1/sqrt(in)); PyTorch state-dict names.
    let bound = 1.0 / (i as f32).sqrt();
    let w_master = read(&lin.weight.master);
    assert!(w_master.iter().all(|w| w.abs() <= bound));
    assert_eq!(lin.weight.name, "4.weight");
    assert_eq!(lin.weight.shape(), &[o, i]);
    if let Some(p) = &lin.bias {
        assert_eq!(p.name, "4.bias");
        assert!(read(&p.master).iter().all(|w| w.abs() <= bound));
        assert_eq!(p.master.dtype(), DType::F32);
    }
    assert_eq!(lin.weight.compute().dtype(), policy.matmul_operand);

    let out = lin.output();
    poison(&out.value);
    submit(g, |p| lin.encode_forward(p));
    let x = f64s(&rounded(&x_host, dt));
    let w = f64s(&read(lin.weight.compute())); // the 16-bit copy the matmul reads
    let bvals = lin.bias.as_ref().map(|p| f64s(&read(&p.master)));
    let want = linear_ref(&x, &w, bvals.as_deref(), b, i, o);
    assert_close("y", &read(&out.value), &want, tol(dt));

    let dy_host = random_vec(&mut r, b * o, 1.0);
    out.grad.as_ref().unwrap().write_f32(&dy_host).unwrap();
    poison(&lin.weight.grad);
    if let Some(p) = &lin.bias {
        poison(&p.grad);
    }
    poison(input.grad.as_ref().unwrap());
    submit(g, |p| lin.encode_backward(p));
    let dy = f64s(&rounded(&dy_host, dt));
    let (dx, dw, db) = linear_back_ref(&x, &w, &dy, b, i, o);
    assert_close("dx", &read(input.grad.as_ref().unwrap()), &dx, tol(dt));
    // f32 gradients of exactly representable 16-bit operands: only f32 summation error.
    assert_close("dW", &read(&lin.weight.grad), &dw, TOL_F32);
    if let Some(p) = &lin.bias {
        assert_close("db", &read(&p.grad), &db, TOL_F32);
    }
    assert!(!flag.is_raised_blocking(g).unwrap(), "no overflow expected");
}

#[test]
fn linear_accumulate_mode_adds_into_param_grads() {
    let g = gpu();
    let flag = OverflowFlag::new(g).unwrap();
    let ctx =
        LayerCtx::new(g, Policy::new(Precision::F32), &flag).with_grad_mode(GradMode::Accumulate);
    let (b, i, o) = (3, 5, 33);
    let mut r = rng(9);
    let x_host = random_vec(&mut r, b * i, 1.0);
    let input = input_node(g, &[b, i], &x_host, DType::F32);
    let lin = Linear::new(&ctx, &input, "0", i, o, true, &mut SplitMix64::new(1)).unwrap();
    let dy_host = random_vec(&mut r, b * o, 1.0);
    lin.output()
        .grad
        .as_ref()
        .unwrap()
        .write_f32(&dy_host)
        .unwrap();
    let g0w = random_vec(&mut r, o * i, 1.0);
    let g0b = random_vec(&mut r, o, 1.0);
    let bias = lin.bias.as_ref().unwrap();
    lin.weight.grad.write_f32(&g0w).unwrap();
    bias.grad.write_f32(&g0b).unwrap();
    submit(g, |p| lin.encode_backward(p));
    let w = f64s(&read(&lin.weight.master));
    let (_, dw, db) = linear_back_ref(&f64s(&x_host), &w, &f64s(&dy_host), b, i, o);
    let want_w: Vec<f64> = dw.iter().zip(&g0w).map(|(d, g0)| d + *g0 as f64).collect();
    let want_b: Vec<f64> = db.iter().zip(&g0b).map(|(d, g0)| d + *g0 as f64).collect();
    assert_close("dW accumulated", &read(&lin.weight.grad), &want_w, TOL_F32);
    assert_close("db accumulated", &read(&bias.grad), &want_b, TOL_F32);
}

#[test]
fn activations_forward_and_backward_match_f64() {
    // n = 5 (a partial octet only), 99 and 2,210 (octets and a tail), 128 (octets only).
    let cases = [(1, 5), (3, 33), (17, 130), (17, 5), (2, 64)];
    for mode in MODES {
        for (path, g) in devices(mode) {
            for kind in [Activation::Gelu, Activation::Relu] {
                for (ci, &(b, c)) in cases.iter().enumerate() {
                    println!("{kind} {mode} {path} B={b} C={c}");
                    let policy = Policy::new(mode);
                    let dt = policy.activation;
                    let flag = OverflowFlag::new(g).unwrap();
                    let ctx = LayerCtx::new(g, policy, &flag);
                    let mut r = rng(200 + ci as u64);
                    let x_host = random_vec(&mut r, b * c, 4.0);
                    let input = input_node(g, &[b, c], &x_host, dt);
                    let layer = ActivationLayer::new(&ctx, &input, kind).unwrap();
                    poison(&layer.output().value);
                    submit(g, |p| layer.encode_forward(p));
                    let x = f64s(&rounded(&x_host, dt));
                    let want: Vec<f64> = x.iter().map(|&v| act_ref(kind, v)).collect();
                    assert_close("y", &read(&layer.output().value), &want, tol(dt));

                    let dy_host = random_vec(&mut r, b * c, 1.0);
                    layer
                        .output()
                        .grad
                        .as_ref()
                        .unwrap()
                        .write_f32(&dy_host)
                        .unwrap();
                    submit(g, |p| layer.encode_backward(p));
                    let dy = f64s(&rounded(&dy_host, dt));
                    let want: Vec<f64> = x
                        .iter()
                        .zip(&dy)
                        .map(|(&v, &d)| d * act_grad_ref(kind, v))
                        .collect();
                    assert_close("dx", &read(input.grad.as_ref().unwrap()), &want, tol(dt));
                    assert!(!flag.is_raised_blocking(g).unwrap());
                }
            }
        }
    }
}

#[test]
fn gelu_is_finite_for_large_inputs() {
    // tanh(u) for |u| ~ 1e12 must not become inf / inf = NaN.
    let g = gpu();
    let flag = OverflowFlag::new(g).unwrap();
    let ctx = LayerCtx::new(g, Policy::new(Precision::F32), &flag);
    let x_host = [-1e4f32, -60.0, -10.0, 0.0, 10.0, 60.0, 1e4];
    let input = input_node(g, &[1, 7], &x_host, DType::F32);
    let layer = ActivationLayer::new(&ctx, &input, Activation::Gelu).unwrap();
    layer
        .output()
        .grad
        .as_ref()
        .unwrap()
        .write_f32(&[1.0; 7])
        .unwrap();
    submit(g, |p| {
        layer.encode_forward(p);
        layer.encode_backward(p);
    });
    let want: Vec<f64> = x_host
        .iter()
        .map(|&v| act_ref(Activation::Gelu, v as f64))
        .collect();
    assert_close("gelu(large)", &read(&layer.output().value), &want, TOL_F32);
    let want: Vec<f64> = x_host
        .iter()
        .map(|&v| act_grad_ref(Activation::Gelu, v as f64))
        .collect();
    assert_close(
        "gelu'(large)",
        &read(input.grad.as_ref().unwrap()),
        &want,
        TOL_F32,
    );
}

#[test]
fn layernorm_forward_and_backward_match_f64() {
    // (9, 700): 32 lanes a row, each summing several elements; (2, 1030): a workgroup a row;
    // (2500, 37): two-pass parameter gradients (partial sums held by the graph).
    let cases = [
        (1, 5),
        (3, 33),
        (17, 130),
        (17, 5),
        (9, 700),
        (2, 1030),
        (2500, 37),
    ];
    for mode in MODES {
        for (path, g) in devices(mode) {
            for (ci, &(b, c)) in cases.iter().enumerate() {
                println!("layernorm {mode} {path} B={b} C={c}");
                check_layernorm(g, mode, b, c, 300 + ci as u64, 0.0, 2.0);
            }
        }
    }
}

/// Inputs uniform in offset ± spread; random gamma / beta; forward, stats and backward.
fn check_layernorm(
    g: &Gpu,
    mode: Precision,
    b: usize,
    c: usize,
    seed: u64,
    offset: f32,
    spread: f32,
) {
    let policy = Policy::new(mode);
    let dt = policy.activation;
    let flag = OverflowFlag::new(g).unwrap();
    let ctx = LayerCtx::new(g, policy, &flag);
    let mut r = rng(seed);
    let x_host: Vec<f32> = random_vec(&mut r, b * c, spread)
        .iter()
        .map(|v| v + offset)
        .collect();
    let input = input_node(g, &[b, c], &x_host, dt);
    let ln = LayerNorm::new(&ctx, &input, "1", 1e-5).unwrap();
    assert_eq!(
        (ln.gamma.name.as_str(), ln.beta.name.as_str()),
        ("1.weight", "1.bias")
    );
    assert_eq!(read(&ln.gamma.master), vec![1.0; c], "gamma starts at 1");
    assert_eq!(read(&ln.beta.master), vec![0.0; c], "beta starts at 0");
    let gamma_host: Vec<f32> = random_vec(&mut r, c, 1.0).iter().map(|v| v + 1.0).collect();
    let beta_host = random_vec(&mut r, c, 0.5);
    ln.gamma.write_f32(&gamma_host).unwrap();
    ln.beta.write_f32(&beta_host).unwrap();
    poison(&ln.output().value);
    submit(g, |p| ln.encode_forward(p));
    let x = f64s(&rounded(&x_host, dt));
    let (gamma, beta) = (f64s(&gamma_host), f64s(&beta_host));
    let (y, mean, rstd) = ln_ref(&x, &gamma, &beta, b, c);
    // Statistics are f32 whatever the mode: f32 tolerance (the reference uses the same
    // rounded inputs), though x ~ 300 has a variance far past f16's range.
    assert_close("mean", &read(ln.mean()), &mean, TOL_F32);
    assert_close("rstd", &read(ln.rstd()), &rstd, TOL_F32);
    assert_close("y", &read(&ln.output().value), &y, tol(dt));

    let dy_host = random_vec(&mut r, b * c, 1.0);
    ln.output()
        .grad
        .as_ref()
        .unwrap()
        .write_f32(&dy_host)
        .unwrap();
    poison(&ln.gamma.grad);
    poison(&ln.beta.grad);
    submit(g, |p| ln.encode_backward(p));
    let dy = f64s(&rounded(&dy_host, dt));
    let (dx, dg, db) = ln_back_ref(&x, &gamma, &dy, b, c);
    // dx is a difference of O(1) terms rounded once to the activation dtype; C = 1-ish
    // rows would cancel exactly, but C >= 5 keeps it well conditioned.
    assert_close("dx", &read(input.grad.as_ref().unwrap()), &dx, tol(dt));
    assert_close("dgamma", &read(&ln.gamma.grad), &dg, 10.0 * TOL_F32);
    assert_close("dbeta", &read(&ln.beta.grad), &db, TOL_F32);
    assert!(!flag.is_raised_blocking(g).unwrap());
}

#[test]
fn layernorm_statistics_are_f32_for_inputs_whose_variance_overflows_f16() {
    // x ~ 300 +- 520: variance ~ 9e4 and squares ~ 7e5, both past f16's 65504. Stored in
    // f16 (fine: |x| < 1000), the statistics must still be finite and right.
    for (path, g) in gpus_for_f16() {
        println!("layernorm of large inputs, f16 {path}");
        check_layernorm(g, Precision::F16, 17, 130, 77, 300.0, 520.0);
    }
    check_layernorm(gpu(), Precision::BF16, 3, 33, 78, 300.0, 520.0);
}

#[test]
fn softmax_cross_entropy_matches_f64() {
    let cases = [(1, 5), (3, 33), (17, 130), (17, 5), (9, 700), (2, 1030)];
    for mode in MODES {
        for (path, g) in devices(mode) {
            for (ci, &(b, v)) in cases.iter().enumerate() {
                println!("softmax xent {mode} {path} B={b} V={v}");
                check_xent(g, mode, b, v, 400 + ci as u64, 0.0, 3.0, 1.0);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_xent(
    g: &Gpu,
    mode: Precision,
    b: usize,
    v: usize,
    seed: u64,
    offset: f32,
    spread: f32,
    scale: f32,
) {
    let policy = Policy::new(mode);
    let dt = policy.activation;
    let flag = OverflowFlag::new(g).unwrap();
    let ctx = LayerCtx::new(g, policy, &flag);
    let scale_buf = constant_scale(g, scale).unwrap();
    let mut r = rng(seed);
    let z_host: Vec<f32> = random_vec(&mut r, b * v, spread)
        .iter()
        .map(|z| z + offset)
        .collect();
    let logits = input_node(g, &[b, v], &z_host, dt);
    let loss = SoftmaxCrossEntropy::new(&ctx, &logits, &scale_buf).unwrap();
    let labels = random_labels(seed, b, v);
    loss.set_labels(g, &labels).unwrap();
    poison(loss.losses());
    poison(loss.loss());
    submit(g, |p| {
        loss.encode_forward(p);
        loss.encode_backward(p);
    });
    let z = f64s(&rounded(&z_host, dt));
    let (losses, mean, dz) = xent_ref(&z, &labels, b, v, scale as f64);
    let got_mean = read(loss.loss())[0];
    assert!(got_mean.is_finite(), "loss {got_mean}");
    // The loss is f32 arithmetic on the stored (rounded) logits: f32 tolerance relative to
    // the logits' magnitude (lse - z[label] cancels the large common offset exactly in
    // f64 but leaves f32's rounding of values ~|offset|).
    let loss_tol = TOL_F32 * (1.0 + offset.abs() as f64);
    assert_close("losses", &read(loss.losses()), &losses, loss_tol);
    assert_close("mean loss", &[got_mean], &[mean], loss_tol);
    assert_close(
        "dlogits",
        &read(logits.grad.as_ref().unwrap()),
        &dz,
        tol(dt),
    );
}

#[test]
fn softmax_of_logits_near_1e4_is_exact_in_f32_under_f16() {
    // Logits ~1e4 are representable in f16 (spacing 8), but exp(1e4) or a sum of exps in
    // f16 would overflow: the loss must still be finite and correct, and dlogits right.
    for (path, g) in gpus_for_f16() {
        println!("f16 {path}");
        check_xent(g, Precision::F16, 17, 33, 500, 1e4, 40.0, 1.0);
    }
    check_xent(gpu(), Precision::BF16, 3, 130, 501, 1e4, 300.0, 1.0);
}

#[test]
fn loss_scale_seeds_backward_from_the_gpu_buffer() {
    // dlogits carry scale[0] / B: with scale 1024 in f16 mode they equal 1024x the
    // unscaled gradient (exactly, up to f16 rounding of the product).
    for (path, g) in gpus_for_f16() {
        println!("f16 {path}");
        check_xent(g, Precision::F16, 3, 33, 600, 0.0, 3.0, 1024.0);
    }
}

#[test]
fn overflowing_dlogits_raise_found_inf() {
    // scale 1e6 with B = 1: |dlogits| up to 1e6 > 65504 overflows f16.
    let g = gpu();
    let flag = OverflowFlag::new(g).unwrap();
    let ctx = LayerCtx::new(g, Policy::new(Precision::F16), &flag);
    let scale = constant_scale(g, 1e6).unwrap();
    let logits = input_node(g, &[1, 5], &[0.0, 1.0, 2.0, 3.0, 4.0], DType::F16);
    let loss = SoftmaxCrossEntropy::new(&ctx, &logits, &scale).unwrap();
    loss.set_labels(g, &[0]).unwrap();
    submit(g, |p| {
        loss.encode_forward(p);
        loss.encode_backward(p);
    });
    assert!(
        read(loss.loss())[0].is_finite(),
        "the f32 loss itself is fine"
    );
    assert!(
        flag.is_raised_blocking(g).unwrap(),
        "f16 overflow must raise found_inf"
    );
}

// ---------------------------------------------------------------------------------------
// Whole MLP

fn configs() -> Vec<MlpConfig> {
    vec![
        MlpConfig {
            widths: vec![5, 33, 17, 7],
            activation: Activation::Gelu,
            layer_norm: true,
            bias: true,
        },
        MlpConfig {
            widths: vec![33, 13, 5],
            activation: Activation::Relu,
            layer_norm: false,
            bias: true,
        },
        MlpConfig {
            widths: vec![5, 9, 3],
            activation: Activation::Gelu,
            layer_norm: false,
            bias: false,
        },
    ]
}

fn build(g: &Gpu, cfg: &MlpConfig, mode: Precision, b: usize, scale: f32) -> (Mlp, OverflowFlag) {
    let flag = OverflowFlag::new(g).unwrap();
    let scale_buf = constant_scale(g, scale).unwrap();
    let ctx = LayerCtx::new(g, Policy::new(mode), &flag);
    let mlp = Mlp::new(&ctx, cfg, b, 1234, &scale_buf).unwrap();
    (mlp, flag)
}

/// GPU gradients of every parameter after one forward + backward.
fn gpu_grads(mlp: &Mlp) -> Vec<Vec<f32>> {
    mlp.params().iter().map(|p| read(&p.grad)).collect()
}

#[test]
fn mlp_param_names_follow_nn_sequential() {
    let g = gpu();
    let (mlp, _flag) = build(g, &configs()[0], Precision::F32, 3, 1.0);
    let names: Vec<&str> = mlp.params().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias", "4.weight", "4.bias",
            "6.weight", "6.bias"
        ]
    );
    let (mlp, _flag) = build(g, &configs()[1], Precision::F32, 3, 1.0);
    let names: Vec<&str> = mlp.params().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
    assert_eq!(mlp.num_params(), 33 * 13 + 13 + 13 * 5 + 5);
}

#[test]
fn mlp_gradient_matches_finite_differences_in_f32() {
    let g = gpu();
    let b = 3;
    for cfg in configs() {
        println!("MLP {cfg}");
        let (mlp, _flag) = build(g, &cfg, Precision::F32, b, 1.0);
        let mut r = rng(700);
        let x_host = random_vec(&mut r, b * cfg.inputs(), 1.0);
        let labels = random_labels(701, b, cfg.classes());
        mlp.set_batch(&x_host, &labels).unwrap();
        for p in mlp.params() {
            poison(&p.grad);
        }
        mlp.forward_backward().unwrap();
        let grads = gpu_grads(&mlp);
        let mut params: Vec<Vec<f64>> = mlp
            .params()
            .iter()
            .map(|p| f64s(&read(&p.master)))
            .collect();
        let x = f64s(&x_host);
        let loss = mlp_loss_ref(&cfg, &params, &x, &labels, b);
        let got_loss = mlp.read_loss_blocking().unwrap();
        assert_close("loss", &[got_loss], &[loss], TOL_F32);
        // Central differences in f64: truncation O(h^2) ~ 1e-12, rounding ~ 1e-16 / h.
        let h = 1e-6;
        for (pi, grad) in grads.iter().enumerate() {
            let mut fd = vec![0.0; grad.len()];
            for k in 0..grad.len() {
                let orig = params[pi][k];
                params[pi][k] = orig + h;
                let up = mlp_loss_ref(&cfg, &params, &x, &labels, b);
                params[pi][k] = orig - h;
                let down = mlp_loss_ref(&cfg, &params, &x, &labels, b);
                params[pi][k] = orig;
                fd[k] = (up - down) / (2.0 * h);
            }
            assert_close(&format!("d{}", mlp.params()[pi].name), grad, &fd, 1e-3);
        }
    }
}

#[test]
fn mlp_gradients_in_f16_and_bf16_track_f32() {
    // Tolerances. A 16-bit mode rounds every stored activation, activation gradient and
    // weight copy to its dtype, each a relative perturbation of at most u (unit roundoff:
    // 2^-11 ~ 4.9e-4 for f16, 2^-8 ~ 3.9e-3 for bf16); all arithmetic stays f32. A
    // parameter gradient is a product of ~2L such rounded tensors (L layers, forward and
    // backward), whose errors are independent, so its relative error is a few u: measured
    // 0.4-2 u on these models (f16 2e-4..7e-4, bf16 1.4e-3..8e-3). The bound is 10 u,
    // room for other draws while a wrong scale, a dropped term or a 16-bit accumulator
    // (errors of order 1, or growing with the reduction length) still fails. F16 runs with loss scale 1024 (gradients divided
    // back), as under the dynamic scaler; BF16 unscaled, its default.
    let b = 17;
    for cfg in configs() {
        let g = gpu();
        let mut r = rng(800);
        let x_host = random_vec(&mut r, b * cfg.inputs(), 1.0);
        let labels = random_labels(801, b, cfg.classes());
        let (ref32, _f) = build(g, &cfg, Precision::F32, b, 1.0);
        ref32.set_batch(&x_host, &labels).unwrap();
        ref32.forward_backward().unwrap();
        let want: Vec<Vec<f64>> = gpu_grads(&ref32).iter().map(|v| f64s(v)).collect();
        let want_loss = ref32.read_loss_blocking().unwrap() as f64;
        for (mode, scale, tolerance) in [
            (Precision::F16, 1024.0f32, 5e-3),
            (Precision::BF16, 1.0, 4e-2),
        ] {
            for (path, g) in devices(mode) {
                println!("MLP {cfg} {mode} {path}");
                let (mlp, flag) = build(g, &cfg, mode, b, scale);
                mlp.set_batch(&x_host, &labels).unwrap();
                mlp.forward_backward().unwrap();
                assert!(!flag.is_raised_blocking(g).unwrap());
                let loss = mlp.read_loss_blocking().unwrap();
                assert_close("loss", &[loss], &[want_loss], tolerance);
                for (p, w) in mlp.params().iter().zip(&want) {
                    let got: Vec<f32> = read(&p.grad).iter().map(|v| v / scale).collect();
                    assert_close(&format!("d{}", p.name), &got, w, tolerance);
                }
            }
        }
    }
}

#[test]
fn mlp_step_is_one_submission_without_readback() {
    // Private devices: the counters are per device, and the shared ones serve tests
    // running in parallel.
    let native = Gpu::with_options_blocking(GpuOptions::from_env()).unwrap();
    let packed = Gpu::with_options_blocking(GpuOptions {
        disable_f16: true,
        ..GpuOptions::from_env()
    })
    .unwrap();
    for mode in MODES {
        let mut paths = vec![("packed", &packed)];
        if mode != Precision::F16 || native.caps().shader_f16 {
            paths.push(("native", &native));
        }
        for (path, g) in paths {
            println!("{mode} {path}");
            let cfg = &configs()[0];
            let (mlp, _flag) = build(g, cfg, mode, 17, 1.0);
            let mut r = rng(900);
            mlp.set_batch(
                &random_vec(&mut r, 17 * cfg.inputs(), 1.0),
                &random_labels(5, 17, cfg.classes()),
            )
            .unwrap();
            mlp.forward_backward().unwrap(); // warm-up: pipelines already built at construction
            g.wait_idle().unwrap();
            let (s0, r0) = (g.submission_count(), g.readback_count());
            mlp.set_batch(
                &random_vec(&mut r, 17 * cfg.inputs(), 1.0),
                &random_labels(6, 17, cfg.classes()),
            )
            .unwrap();
            mlp.forward_backward().unwrap();
            assert_eq!(g.submission_count() - s0, 1, "one submission per step");
            assert_eq!(g.readback_count() - r0, 0, "no readback in a step");
            assert!(mlp.read_loss_blocking().unwrap().is_finite());
            assert_eq!(
                mlp.read_logits_blocking().unwrap().len(),
                17 * cfg.classes()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors and config

#[test]
fn shape_mismatches_are_typed_errors() {
    let g = gpu();
    let flag = OverflowFlag::new(g).unwrap();
    let ctx = LayerCtx::new(g, Policy::new(Precision::F16), &flag);
    let x = input_node(g, &[3, 5], &[0.5; 15], DType::F16);
    // A Linear expecting 6 inputs after a layer producing 5.
    let err = Linear::new(&ctx, &x, "0", 6, 4, true, &mut SplitMix64::new(0)).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // A layer over a 3-D value.
    let cube = input_node(g, &[2, 3, 5], &[0.5; 30], DType::F16);
    let err = LayerNorm::new(&ctx, &cube, "1", 1e-5).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = ActivationLayer::gelu(&ctx, &cube).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // Ops: mismatched x / y.
    let y = Tensor::empty(g, &[3, 4], DType::F16).unwrap();
    let err =
        halfgrad::ops::activation::forward(g, Activation::Relu, &x.value, &y, &flag).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // Wrong host batch sizes.
    let scale = constant_scale(g, 1.0).unwrap();
    let cfg = &configs()[1];
    let mlp = Mlp::new(&ctx, cfg, 3, 0, &scale).unwrap();
    let err = mlp.set_batch(&[0.0; 5], &[0, 1, 2]).unwrap_err();
    assert!(matches!(err, Error::DataLength { .. }), "{err}");
    let err = mlp.set_batch(&vec![0.0; 3 * 33], &[0, 1]).unwrap_err();
    assert!(matches!(err, Error::DataLength { .. }), "{err}");
    // Bad configs.
    let bad = MlpConfig {
        widths: vec![5],
        ..cfg.clone()
    };
    assert!(matches!(
        Mlp::new(&ctx, &bad, 3, 0, &scale).unwrap_err(),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(
        Mlp::new(&ctx, cfg, 0, 0, &scale).unwrap_err(),
        Error::Empty { .. }
    ));
}

#[test]
fn out_of_range_labels_are_refused_on_upload() {
    let g = gpu();
    let flag = OverflowFlag::new(g).unwrap();
    let ctx = LayerCtx::new(g, Policy::new(Precision::F32), &flag);
    let scale = constant_scale(g, 1.0).unwrap();
    let cfg = &configs()[1]; // 5 classes
    let mlp = Mlp::new(&ctx, cfg, 3, 0, &scale).unwrap();
    let err = mlp.set_batch(&vec![0.0; 3 * 33], &[0, 5, 1]).unwrap_err();
    assert_eq!(
        err,
        Error::LabelOutOfRange {
            index: 1,
            label: 5,
            classes: 5
        }
    );
    let err = mlp
        .loss_layer()
        .set_labels(g, &[4, 4, u32::MAX])
        .unwrap_err();
    assert!(matches!(err, Error::LabelOutOfRange { index: 2, .. }));
    mlp.set_batch(&vec![0.0; 3 * 33], &[0, 4, 1]).unwrap();
}

#[test]
fn mlp_config_round_trips_through_a_string() {
    for cfg in configs() {
        let s = cfg.to_string();
        assert_eq!(s.parse::<MlpConfig>().unwrap(), cfg, "{s}");
    }
    assert_eq!(
        configs()[0].to_string(),
        "widths=5,33,17,7;activation=gelu;layer_norm=true;bias=true"
    );
    assert!("widths=5;activation=gelu".parse::<MlpConfig>().is_err());
    assert!("widths=5,3;activation=tanh".parse::<MlpConfig>().is_err());
}

#[test]
fn policy_line_names_every_dtype() {
    assert_eq!(
        Policy::new(Precision::F16).to_string(),
        "f16: matmul f16xf16->f32 acc, activations f16, norms/softmax/loss f32, master weights f32, grads f32, loss scaling dynamic"
    );
}

#[test]
fn mlp_trains_with_adamw_and_the_loss_scaler_one_submission_a_step() {
    // The wiring the trainer uses: the scaler's found-inf flag and scale buffer go into the
    // MLP; each step clears the flag, then forward, backward and the optimizer step share
    // one compute pass of one command buffer (counted in the test above, on a private
    // device). Overfitting one batch must cut the loss.
    use halfgrad::amp::LossScaler;
    use halfgrad::optim::{AdamConfig, AdamW};
    let cfg = &configs()[0];
    let b = 17;
    let mut r = rng(1000);
    let x_host = random_vec(&mut r, b * cfg.inputs(), 1.0);
    let labels = random_labels(1001, b, cfg.classes());
    for mode in MODES {
        for (path, g) in devices(mode) {
            let scaler = LossScaler::for_precision(g, mode).unwrap();
            let ctx = LayerCtx::new(g, Policy::new(mode), scaler.flag());
            let mlp = Mlp::new(&ctx, cfg, b, 7, scaler.scale_buffer()).unwrap();
            let config = AdamConfig {
                lr: 1e-2,
                ..AdamConfig::default()
            };
            let adam = AdamW::new(g, &mlp.params(), config, &scaler).unwrap();
            mlp.set_batch(&x_host, &labels).unwrap();
            mlp.forward().unwrap();
            let first = mlp.read_loss_blocking().unwrap();
            for _ in 0..40 {
                submit_with(
                    g,
                    |enc| adam.clear_flag(enc),
                    |pass| {
                        mlp.encode_forward_backward(pass);
                        adam.encode_step(pass);
                    },
                )
                .unwrap();
            }
            mlp.forward().unwrap();
            let last = mlp.read_loss_blocking().unwrap();
            let stats = adam.stats_blocking().unwrap();
            println!("{mode} {path}: loss {first:.4} -> {last:.4}, {stats:?}");
            assert!(
                last.is_finite() && last < 0.5 * first,
                "loss {first} -> {last}"
            );
        }
    }
}
