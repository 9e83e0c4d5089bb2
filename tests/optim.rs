//! Loss scaler and fused AdamW on the GPU (lavapipe in CI): PyTorch GradScaler's scale
//! sequence, bit-identical skipped steps, f16 overflow from a kernel's found_inf slot,
//! AdamW against an f64 reference, no readback or allocation per step, bit-exact resume.

mod common;

use common::{gpu, gpus_for_f16, random_vec, rel_err, rng, submit_with};
use halfgrad::amp::{LossScaler, OptimStats, ScalerConfig};
use halfgrad::kernels::{Access, Bind, KernelDef, Slot, SlotKind, ANY};
use halfgrad::nn::Param;
use halfgrad::optim::{AdamConfig, AdamW, StateData, StateTensor};
use halfgrad::{DType, Error, Gpu, Tensor};

// ---------------------------------------------------------------------------------------
// Helpers

/// One training step's optimizer half: clear the flag, encode the step, submit.
fn step(g: &Gpu, opt: &AdamW) {
    submit_with(g, |enc| opt.clear_flag(enc), |pass| opt.encode_step(pass)).unwrap();
}

fn param(g: &Gpu, name: &str, shape: &[usize], seed: u64, low: DType) -> Param {
    let n: usize = shape.iter().product();
    let values = random_vec(&mut rng(seed), n, 1.0);
    Param::from_f32(g, name, shape, &values, low).unwrap()
}

fn bits(t: &Tensor) -> Vec<u8> {
    t.to_bytes().unwrap()
}

fn stats(opt: &AdamW) -> OptimStats {
    opt.stats_blocking().unwrap()
}

/// PyTorch's `torch._amp_update_scale_` (aten/src/ATen/native/cuda/AmpKernels.cu), plus
/// the optional floor / ceiling, in f32 like the CUDA kernel.
struct RefScaler {
    scale: f32,
    tracker: u32,
    growth: f32,
    backoff: f32,
    interval: u32,
    min: Option<f32>,
    max: Option<f32>,
}

impl RefScaler {
    fn new(c: &ScalerConfig) -> Self {
        RefScaler {
            scale: c.init_scale,
            tracker: 0,
            growth: c.growth_factor,
            backoff: c.backoff_factor,
            interval: c.growth_interval,
            min: c.min_scale,
            max: c.max_scale,
        }
    }

    fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.backoff;
            if let Some(m) = self.min {
                self.scale = self.scale.max(m);
            }
            self.tracker = 0;
        } else {
            let successful = self.tracker + 1;
            if successful == self.interval {
                let new_scale = self.scale * self.growth;
                if new_scale.is_finite() {
                    self.scale = self.max.map_or(new_scale, |m| new_scale.min(m));
                }
                self.tracker = 0;
            } else {
                self.tracker = successful;
            }
        }
    }
}

/// Runs a script of steps ('c' clean, 'i' an inf, 'n' a NaN in one gradient element)
/// and compares scale, tracker and counters with the reference after every step.
fn run_scale_script(config: ScalerConfig, script: &str) {
    let g = gpu();
    let a = param(g, "a", &[5], 1, DType::F16);
    let b = param(g, "b", &[3, 3], 2, DType::F32);
    let scaler = LossScaler::new(g, config.clone()).unwrap();
    let opt = AdamW::new(g, &[&a, &b], AdamConfig::default(), &scaler).unwrap();
    let mut reference = RefScaler::new(&config);
    let (mut skipped, mut steps) = (0u32, 0u32);
    for (k, c) in script.chars().filter(|c| !c.is_whitespace()).enumerate() {
        let mut ga = vec![0.25f32; 5];
        let mut gb = vec![-0.5f32; 9];
        match c {
            'c' => {}
            'i' => ga[k % 5] = f32::INFINITY,
            'n' => gb[k % 9] = f32::NAN,
            other => panic!("bad script character {other}"),
        }
        a.grad.write_f32(&ga).unwrap();
        b.grad.write_f32(&gb).unwrap();
        step(g, &opt);
        let found = c != 'c';
        reference.update(found);
        skipped += found as u32;
        steps += !found as u32;
        let s = stats(&opt);
        let expect = (reference.scale, reference.tracker, skipped, steps, found);
        let got = (
            s.scale,
            s.growth_tracker,
            s.skipped_steps,
            s.steps,
            s.last_step_skipped,
        );
        assert_eq!(got, expect, "after step {k} ('{c}') of {script:?}");
        assert_eq!(s.nonfinite_steps, skipped);
    }
}

// ---------------------------------------------------------------------------------------
// Loss scaler

#[test]
fn scale_sequence_matches_pytorch_gradscaler() {
    // PyTorch defaults except a small growth interval.
    run_scale_script(
        ScalerConfig {
            growth_interval: 3,
            ..Default::default()
        },
        "ccc i ccccc i n cccccccccc i ccc n cccc",
    );
    // Growth interval 1: growth on every clean step.
    run_scale_script(
        ScalerConfig {
            growth_interval: 1,
            init_scale: 4.0,
            ..Default::default()
        },
        "ccc n c i i c",
    );
}

#[test]
fn scale_sequence_respects_floor_and_ceiling() {
    let config = ScalerConfig {
        init_scale: 8.0,
        growth_interval: 2,
        min_scale: Some(2.0),
        max_scale: Some(32.0),
        ..Default::default()
    };
    // Down to the floor (8 -> 4 -> 2 -> 2 -> 2), up to the ceiling (.. 16 -> 32 -> 32).
    run_scale_script(config, "iiii cc cc cc cc cc cc i cc");
    // A non-power-of-two ceiling clamps the grown value; growth past f32 range is refused.
    run_scale_script(
        ScalerConfig {
            init_scale: 3.0,
            growth_interval: 1,
            max_scale: Some(10.0),
            ..Default::default()
        },
        "cccc i c",
    );
    run_scale_script(
        ScalerConfig {
            init_scale: 2f32.powi(127),
            growth_interval: 1,
            ..Default::default()
        },
        "ccc i cc",
    );
}

#[test]
fn scaler_defaults_follow_precision_and_pytorch() {
    use halfgrad::amp::Precision;
    let f16 = ScalerConfig::for_precision(Precision::F16);
    assert!(f16.enabled);
    assert_eq!(f16.init_scale, 65536.0);
    assert_eq!(f16.growth_factor, 2.0);
    assert_eq!(f16.backoff_factor, 0.5);
    assert_eq!(f16.growth_interval, 2000);
    assert!(!ScalerConfig::for_precision(Precision::BF16).enabled);
    assert!(!ScalerConfig::for_precision(Precision::F32).enabled);

    let g = gpu();
    let s = LossScaler::for_precision(g, Precision::F16).unwrap();
    let scale = g.read_buffer_blocking(s.scale_buffer(), 4).unwrap();
    assert_eq!(f32::from_le_bytes(scale.try_into().unwrap()), 65536.0);
    let s = LossScaler::for_precision(g, Precision::BF16).unwrap();
    let scale = g.read_buffer_blocking(s.scale_buffer(), 4).unwrap();
    assert_eq!(f32::from_le_bytes(scale.try_into().unwrap()), 1.0);

    for bad in [
        ScalerConfig {
            growth_factor: 1.0,
            ..Default::default()
        },
        ScalerConfig {
            backoff_factor: 1.0,
            ..Default::default()
        },
        ScalerConfig {
            growth_interval: 0,
            ..Default::default()
        },
        ScalerConfig {
            init_scale: f32::INFINITY,
            ..Default::default()
        },
        ScalerConfig {
            min_scale: Some(1e6),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            LossScaler::new(g, bad),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn disabled_scaler_keeps_scale_one_counts_nonfinite_and_skips_only_when_asked() {
    let g = gpu();
    for skip in [false, true] {
        let p = param(g, "w", &[7], 3, DType::BF16);
        let scaler = LossScaler::new(
            g,
            ScalerConfig {
                skip_nonfinite_when_disabled: skip,
                growth_interval: 1,
                ..ScalerConfig::disabled()
            },
        )
        .unwrap();
        let opt = AdamW::new(g, &[&p], AdamConfig::default(), &scaler).unwrap();
        let before = bits(&p.master);
        let mut grad = vec![0.1f32; 7];
        grad[2] = f32::INFINITY;
        p.grad.write_f32(&grad).unwrap();
        step(g, &opt);
        let s = stats(&opt);
        assert_eq!(s.scale, 1.0);
        assert_eq!(s.growth_tracker, 0);
        assert_eq!(s.nonfinite_steps, 1);
        assert_eq!(s.skipped_steps, skip as u32);
        assert_eq!(s.steps, !skip as u32);
        let after = p.master.to_f32_vec().unwrap();
        if skip {
            assert_eq!(bits(&p.master), before);
        } else {
            // PyTorch with the scaler disabled: the inf reaches the weights.
            assert!(after.iter().any(|x| !x.is_finite()));
        }
        // Clean steps never move a disabled scale.
        p.grad.write_f32(&[0.1; 7]).unwrap();
        step(g, &opt);
        step(g, &opt);
        let s = stats(&opt);
        assert_eq!((s.scale, s.growth_tracker), (1.0, 0));
        let scale = g.read_buffer_blocking(scaler.scale_buffer(), 4).unwrap();
        assert_eq!(f32::from_le_bytes(scale.try_into().unwrap()), 1.0);
    }
}

// ---------------------------------------------------------------------------------------
// Skipped steps

fn snapshot(opt: &AdamW, params: &[&Param]) -> (Vec<Vec<u8>>, Vec<StateTensor>) {
    let mut b = Vec::new();
    for p in params {
        b.push(bits(&p.master));
        if let Some(low) = &p.low {
            b.push(bits(low));
        }
    }
    let mut state = opt.state_blocking().unwrap();
    // The statistics move on a skipped step; everything else must not.
    state.retain(|t| t.name.contains(".exp_avg") || t.name.contains("bias_correction"));
    (b, state)
}

#[test]
fn a_nonfinite_gradient_skips_the_whole_step_bit_identically() {
    let g = gpu();
    let make = |seed: u64| {
        vec![
            param(g, "0.weight", &[7], seed, DType::F16),
            param(g, "0.bias", &[33], seed + 1, DType::BF16),
            param(g, "1.weight", &[3, 5], seed + 2, DType::F32),
        ]
    };
    let cfg = AdamConfig {
        lr: 1e-2,
        weight_decay: 0.1,
        max_grad_norm: Some(1.0),
        ..Default::default()
    };
    // `ps` sees two overflow steps; `qs` (same start) never does. Skipped steps must be
    // exact no-ops, so both end bit-identical.
    let ps = make(10);
    let qs = make(10);
    let p_refs: Vec<&Param> = ps.iter().collect();
    let q_refs: Vec<&Param> = qs.iter().collect();
    let sp = LossScaler::new(g, ScalerConfig::default()).unwrap();
    let sq = LossScaler::new(g, ScalerConfig::default()).unwrap();
    let op = AdamW::new(g, &p_refs, cfg.clone(), &sp).unwrap();
    let oq = AdamW::new(g, &q_refs, cfg, &sq).unwrap();

    let grads: Vec<Vec<f32>> = ps
        .iter()
        .enumerate()
        .map(|(i, p)| random_vec(&mut rng(100 + i as u64), p.len(), 1.0))
        .collect();
    let upload = |params: &[Param], scale: f32, poison: Option<(usize, usize, f32)>| {
        for (i, p) in params.iter().enumerate() {
            let mut v: Vec<f32> = grads[i].iter().map(|x| x * scale).collect();
            if let Some((pi, ei, bad)) = poison {
                if pi == i {
                    v[ei] = bad;
                }
            }
            p.grad.write_f32(&v).unwrap();
        }
    };

    // One clean step so the moments are non-zero.
    upload(&ps, 65536.0, None);
    step(g, &op);
    upload(&qs, 65536.0, None);
    step(g, &oq);
    let (before, state_before) = snapshot(&op, &p_refs);

    // An inf in one element of one gradient, then a NaN in another parameter's.
    let mut scale = 65536.0;
    for (k, poison) in [(0usize, 3usize, f32::INFINITY), (1, 20, f32::NAN)]
        .into_iter()
        .enumerate()
    {
        upload(&ps, scale, Some(poison));
        step(g, &op);
        scale *= 0.5;
        let s = stats(&op);
        assert!(s.last_step_skipped, "step {k}");
        assert_eq!(s.skipped_steps, k as u32 + 1);
        assert_eq!(s.steps, 1, "the step count does not move on a skipped step");
        assert_eq!(s.scale, scale, "the scale halves");
        assert_eq!(s.growth_tracker, 0);
        let (after, state_after) = snapshot(&op, &p_refs);
        assert!(
            after == before,
            "master or low copy changed on skipped step {k}"
        );
        assert_eq!(
            state_after, state_before,
            "moments changed on skipped step {k}"
        );
        for p in &ps {
            assert!(
                p.grad.to_f32_vec().unwrap().iter().all(|&x| x == 0.0),
                "gradients are cleared after a skipped step"
            );
        }
    }

    // The next clean step updates normally: same result as the run that never overflowed.
    upload(&ps, scale, None);
    step(g, &op);
    upload(&qs, 65536.0, None);
    step(g, &oq);
    let s = stats(&op);
    assert!(!s.last_step_skipped);
    assert_eq!((s.steps, s.skipped_steps, s.growth_tracker), (2, 2, 1));
    for (p, q) in ps.iter().zip(&qs) {
        assert_eq!(bits(&p.master), bits(&q.master), "{}", p.name);
        if let (Some(a), Some(b)) = (&p.low, &q.low) {
            assert_eq!(bits(a), bits(b), "{} low copy", p.name);
        }
    }
    assert_ne!(
        bits(&ps[0].master),
        before[0],
        "the clean step moved the weights"
    );
    let sq = stats(&oq);
    assert_eq!(s.last_grad_norm, sq.last_grad_norm);
}

/// `cast` with a found_inf slot: its 16-bit stores raise the flag on overflow, as a
/// backward kernel that writes f16 activation gradients does.
static CAST_WITH_FOUND_INF: KernelDef = KernelDef {
    name: "test/cast_found_inf",
    source: include_str!("../shaders/cast.wgsl"),
    section: "cast",
    slots: &[
        Slot::read("x", ANY),
        Slot::write("y", ANY),
        Slot::raw("found_inf", SlotKind::Atomic, Access::ReadWrite),
    ],
    params: true,
    cooperative_matrix: false,
    needs_f16: false,
};

#[test]
fn an_f16_activation_overflow_in_a_kernel_skips_the_step() {
    for (path, g) in gpus_for_f16() {
        for (value, overflow) in [(70000.0f32, true), (60000.0, false)] {
            let p = param(g, "w", &[9], 5, DType::F16);
            let scaler = LossScaler::new(g, ScalerConfig::default()).unwrap();
            let opt = AdamW::new(g, &[&p], AdamConfig::default(), &scaler).unwrap();
            let before = (bits(&p.master), bits(p.low.as_ref().unwrap()));
            p.grad.write_f32(&[1.0; 9]).unwrap();

            let x = Tensor::from_f32(g, &[5], &[1.0, value, -2.0, 3.0, 0.5], DType::F32).unwrap();
            let y = Tensor::full(g, &[5], DType::F16, f32::NAN).unwrap();
            let n = 5u32;
            let cast = g
                .dispatch(
                    &CAST_WITH_FOUND_INF,
                    &[
                        Bind::Tensor(&x),
                        Bind::Tensor(&y),
                        Bind::Buffer(scaler.flag().buffer()),
                    ],
                    bytemuck::bytes_of(&n),
                    &[("WG", 64)],
                    [1, 1, 1],
                )
                .unwrap();
            // One step: clear, "backward" (the cast), optimizer.
            submit_with(
                g,
                |enc| opt.clear_flag(enc),
                |pass| {
                    cast.encode(pass);
                    opt.encode_step(pass);
                },
            )
            .unwrap();

            assert_eq!(
                scaler.flag().is_raised_blocking(g).unwrap(),
                overflow,
                "{path}"
            );
            let s = stats(&opt);
            assert_eq!(s.last_step_skipped, overflow, "{path} {value}");
            let after = (bits(&p.master), bits(p.low.as_ref().unwrap()));
            if overflow {
                assert_eq!(s.scale, 32768.0);
                assert!(after == before, "{path}: weights moved on a skipped step");
            } else {
                assert_eq!(s.scale, 65536.0);
                assert!(after != before, "{path}: a clean step must update");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// AdamW numerics

struct RefAdam {
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    wd: f64,
    max_norm: Option<f64>,
    p: Vec<Vec<f64>>,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    t: i32,
}

impl RefAdam {
    /// One step with unscaled gradients; returns the global norm before clipping.
    fn step(&mut self, grads: &[Vec<f32>]) -> f64 {
        self.t += 1;
        let norm = grads
            .iter()
            .flatten()
            .map(|&g| (g as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let coef = self.max_norm.map_or(1.0, |m| (m / (norm + 1e-6)).min(1.0));
        let bc1 = 1.0 - self.b1.powi(self.t);
        let bc2 = 1.0 - self.b2.powi(self.t);
        for (k, grad) in grads.iter().enumerate() {
            for (i, &g) in grad.iter().enumerate() {
                let g = g as f64 * coef;
                let m = &mut self.m[k][i];
                let v = &mut self.v[k][i];
                let p = &mut self.p[k][i];
                *p *= 1.0 - self.lr * self.wd;
                *m = self.b1 * *m + (1.0 - self.b1) * g;
                *v = self.b2 * *v + (1.0 - self.b2) * g * g;
                *p -= self.lr / bc1 * *m / ((*v).sqrt() / bc2.sqrt() + self.eps);
            }
        }
        norm
    }
}

#[test]
fn adamw_matches_an_f64_reference_over_ten_steps_with_decay_and_clipping() {
    // Both f16 paths; sizes with whole octets only (16, 64, 8 x 131), a partial octet only
    // (1, 7) and both (33, 129, 65, 9 x 131), the 16-bit copies poisoned before the steps.
    for (path, g) in gpus_for_f16() {
        println!("path {path}");
        check_adamw_against_f64(g);
    }
}

fn check_adamw_against_f64(g: &Gpu) {
    let shapes: [(&str, &[usize], DType); 10] = [
        ("0.weight", &[1], DType::F32),
        ("0.bias", &[7], DType::F16),
        ("1.weight", &[33], DType::BF16),
        ("1.bias", &[129], DType::F16),
        ("2.weight", &[5, 13], DType::F32),
        ("2.bias", &[16], DType::BF16),
        ("3.weight", &[8, 131], DType::F16),
        ("3.bias", &[64], DType::F32),
        ("4.weight", &[9, 131], DType::BF16),
        ("4.bias", &[9, 131], DType::F32),
    ];
    let params: Vec<Param> = shapes
        .iter()
        .enumerate()
        .map(|(i, (name, shape, low))| param(g, name, shape, 20 + i as u64, *low))
        .collect();
    for p in &params {
        if let Some(low) = &p.low {
            low.write_f32(&vec![f32::NAN; p.len()]).unwrap(); // poisoned
        }
    }
    let refs: Vec<&Param> = params.iter().collect();
    let cfg = AdamConfig {
        lr: 1e-2,
        betas: (0.9, 0.999),
        eps: 1e-8,
        weight_decay: 0.1,
        max_grad_norm: Some(4.0),
    };
    let scale = 1024.0f32;
    let scaler = LossScaler::new(
        g,
        ScalerConfig {
            init_scale: scale,
            ..Default::default()
        },
    )
    .unwrap();
    let opt = AdamW::new(g, &refs, cfg.clone(), &scaler).unwrap();
    let mut reference = RefAdam {
        lr: cfg.lr as f64,
        b1: cfg.betas.0 as f64,
        b2: cfg.betas.1 as f64,
        eps: cfg.eps as f64,
        wd: cfg.weight_decay as f64,
        max_norm: cfg.max_grad_norm.map(|x| x as f64),
        p: params
            .iter()
            .map(|p| {
                p.master
                    .to_f32_vec()
                    .unwrap()
                    .iter()
                    .map(|&x| x as f64)
                    .collect()
            })
            .collect(),
        m: params.iter().map(|p| vec![0.0; p.len()]).collect(),
        v: params.iter().map(|p| vec![0.0; p.len()]).collect(),
        t: 0,
    };
    let mut r = rng(77);
    let mut clipped = 0;
    for t in 0..10 {
        // Alternate large and small gradients: some steps clip (norm > 4), some do not.
        // Amplitudes scaled so the norms stay those of the first five tensors (235
        // elements) at amplitudes 1 and 0.2: about 8.9 and 1.8.
        let total: usize = params.iter().map(|p| p.len()).sum();
        let amplitude = if t % 2 == 0 { 1.0 } else { 0.2 } * (235.0 / total as f32).sqrt();
        let grads: Vec<Vec<f32>> = params
            .iter()
            .map(|p| random_vec(&mut r, p.len(), amplitude))
            .collect();
        for (p, gr) in params.iter().zip(&grads) {
            // Scaling by a power of two is exact, so the reference sees the same values.
            let scaled: Vec<f32> = gr.iter().map(|x| x * scale).collect();
            p.grad.write_f32(&scaled).unwrap();
        }
        step(g, &opt);
        let norm = reference.step(&grads);
        clipped += (norm > 4.0) as u32;
        let s = stats(&opt);
        let norm_err = (s.last_grad_norm as f64 - norm).abs() / norm;
        assert!(
            norm_err < 1e-5,
            "step {t}: norm {} vs {norm}",
            s.last_grad_norm
        );
    }
    assert!(
        clipped > 0 && clipped < 10,
        "clipping active in some steps only"
    );
    let s = stats(&opt);
    assert_eq!((s.steps, s.skipped_steps, s.scale), (10, 0, scale));

    for (k, p) in params.iter().enumerate() {
        let got = p.master.to_f32_vec().unwrap();
        let err = rel_err(&got, &reference.p[k]);
        println!("{}: master rel err {err:.2e}", p.name);
        assert!(err < 1e-6, "{}: master rel err {err:.2e}", p.name);
        let (m, v) = opt.moments(&p.name).unwrap();
        let em = rel_err(&m.to_f32_vec().unwrap(), &reference.m[k]);
        let ev = rel_err(&v.to_f32_vec().unwrap(), &reference.v[k]);
        assert!(
            em < 1e-5 && ev < 1e-5,
            "{}: moments {em:.2e} {ev:.2e}",
            p.name
        );
        // The low copy is the master rounded to nearest even, bit for bit.
        if let Some(low) = &p.low {
            let want: Vec<u16> = got
                .iter()
                .map(|&x| match low.dtype() {
                    DType::F16 => half::f16::from_f32(x).to_bits(),
                    _ => half::bf16::from_f32(x).to_bits(),
                })
                .collect();
            assert_eq!(low.to_u16_bits().unwrap(), want, "{} low copy", p.name);
        }
        assert!(p.grad.to_f32_vec().unwrap().iter().all(|&x| x == 0.0));
    }
}

#[test]
fn set_lr_takes_effect_on_the_next_step() {
    let g = gpu();
    let p = param(g, "w", &[11], 8, DType::F32);
    let scaler = LossScaler::new(g, ScalerConfig::disabled()).unwrap();
    let opt = AdamW::new(g, &[&p], AdamConfig::default(), &scaler).unwrap();
    opt.set_lr(0.0).unwrap();
    assert_eq!(opt.lr(), 0.0);
    let before = bits(&p.master);
    p.grad.write_f32(&[0.3; 11]).unwrap();
    step(g, &opt);
    assert_eq!(
        bits(&p.master),
        before,
        "lr 0 (and no decay) leaves the weights"
    );
    opt.set_lr(0.1).unwrap();
    p.grad.write_f32(&[0.3; 11]).unwrap();
    step(g, &opt);
    let after = p.master.to_f32_vec().unwrap();
    let old = Tensor::from_bytes(g, &[11], DType::F32, &before).unwrap();
    let old = old.to_f32_vec().unwrap();
    for (a, b) in after.iter().zip(&old) {
        // Step 2, constant gradient: the bias-corrected update is exactly lr in size.
        assert!(((b - a) - 0.1).abs() < 1e-5, "{b} -> {a}");
    }
    assert!(matches!(
        opt.set_lr(f32::NAN),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(opt.set_lr(-1.0), Err(Error::InvalidArgument(_))));
}

// ---------------------------------------------------------------------------------------
// No readback, no allocation

#[test]
fn a_step_reads_nothing_back_and_allocates_nothing() {
    // A device of its own: the counters are per device and other tests run in parallel.
    let g = &Gpu::with_options_blocking(halfgrad::GpuOptions::from_env()).unwrap();
    let a = param(g, "a", &[129], 30, DType::F16);
    let b = param(g, "b", &[7, 3], 31, DType::BF16);
    let scaler = LossScaler::new(g, ScalerConfig::default()).unwrap();
    let opt = AdamW::new(
        g,
        &[&a, &b],
        AdamConfig {
            max_grad_norm: Some(1.0),
            ..Default::default()
        },
        &scaler,
    )
    .unwrap();
    step(g, &opt); // warm-up
    g.wait_idle().unwrap();
    let (readbacks, created, submissions) =
        (g.readback_count(), g.pool().created(), g.submission_count());
    for _ in 0..3 {
        opt.set_lr(2e-3).unwrap();
        step(g, &opt);
    }
    g.wait_idle().unwrap();
    assert_eq!(g.readback_count(), readbacks, "a step issued a readback");
    assert_eq!(g.pool().created(), created, "a step created a buffer");
    assert_eq!(
        g.submission_count(),
        submissions + 3,
        "one submission per step"
    );
    // Statistics cost exactly one readback.
    let _ = stats(&opt);
    assert_eq!(g.readback_count(), readbacks + 1);
}

// ---------------------------------------------------------------------------------------
// State out and in

/// N steps in one go == k steps, state out, a fresh optimizer on fresh parameters, state
/// in, N - k steps: bit for bit, with a skipped step, scale growth and an lr schedule.
#[test]
fn resume_from_state_is_bit_exact() {
    let g = gpu();
    let shapes: [(&str, &[usize], DType); 3] = [
        ("0.weight", &[7, 5], DType::F16),
        ("0.bias", &[7], DType::BF16),
        ("1.weight", &[33], DType::F32),
    ];
    let make = || -> Vec<Param> {
        shapes
            .iter()
            .enumerate()
            .map(|(i, (n, s, d))| param(g, n, s, 40 + i as u64, *d))
            .collect()
    };
    let scfg = ScalerConfig {
        growth_interval: 2,
        init_scale: 256.0,
        ..Default::default()
    };
    let acfg = AdamConfig {
        weight_decay: 0.05,
        max_grad_norm: Some(2.0),
        ..Default::default()
    };
    let total = 8;
    let split = 4;
    // Gradient of step t (unscaled); step 2 overflows.
    let grads = |t: usize, p: &Param, i: usize| -> Vec<f32> {
        let mut v = random_vec(&mut rng(1000 + 10 * t as u64 + i as u64), p.len(), 1.0);
        if t == 2 && i == 1 {
            v[3] = f32::INFINITY;
        }
        v
    };
    let run = |opt: &AdamW, params: &[Param], range: std::ops::Range<usize>| {
        for t in range {
            let scale = stats(opt).scale; // tests may read between steps
            for (i, p) in params.iter().enumerate() {
                let v: Vec<f32> = grads(t, p, i).iter().map(|x| x * scale).collect();
                p.grad.write_f32(&v).unwrap();
            }
            opt.set_lr(1e-2 / (1.0 + t as f32)).unwrap();
            step(g, opt);
        }
    };

    let whole = make();
    let whole_refs: Vec<&Param> = whole.iter().collect();
    let s1 = LossScaler::new(g, scfg.clone()).unwrap();
    let o1 = AdamW::new(g, &whole_refs, acfg.clone(), &s1).unwrap();
    run(&o1, &whole, 0..total);

    let first = make();
    let first_refs: Vec<&Param> = first.iter().collect();
    let s2 = LossScaler::new(g, scfg.clone()).unwrap();
    let o2 = AdamW::new(g, &first_refs, acfg.clone(), &s2).unwrap();
    run(&o2, &first, 0..split);
    let saved = o2.state_blocking().unwrap();
    let kv = o2.config_kv();
    // Through bytes, as a checkpoint would store them.
    let saved: Vec<StateTensor> = saved
        .iter()
        .map(|t| {
            StateTensor::from_le_bytes(&t.name, t.dtype(), &t.shape, &t.to_le_bytes()).unwrap()
        })
        .collect();

    // A fresh run: parameters loaded from the "checkpoint", optimizer rebuilt from kv.
    let second = make();
    for (p, q) in second.iter().zip(&first) {
        p.master.write_bytes(&bits(&q.master)).unwrap();
        if let (Some(a), Some(b)) = (&p.low, &q.low) {
            a.write_bytes(&bits(b)).unwrap();
        }
    }
    let second_refs: Vec<&Param> = second.iter().collect();
    let s3 = LossScaler::new(g, ScalerConfig::default().with_kv(&kv).unwrap()).unwrap();
    let o3 = AdamW::new(
        g,
        &second_refs,
        AdamConfig::default().with_kv(&kv).unwrap(),
        &s3,
    )
    .unwrap();
    assert_eq!(o3.config().betas, acfg.betas);
    assert_eq!(s3.config(), &scfg);
    o3.load_state(&saved).unwrap();
    assert_eq!(stats(&o3), stats(&o2));
    run(&o3, &second, split..total);

    let (a, b) = (stats(&o1), stats(&o3));
    assert_eq!(a, b);
    assert_eq!(a.skipped_steps, 1);
    assert!(a.scale > 256.0, "the scale grew during the run");
    for (p, q) in whole.iter().zip(&second) {
        assert_eq!(bits(&p.master), bits(&q.master), "{} master", p.name);
        if let (Some(x), Some(y)) = (&p.low, &q.low) {
            assert_eq!(bits(x), bits(y), "{} low", p.name);
        }
    }
    let (sa, sb) = (o1.state_blocking().unwrap(), o3.state_blocking().unwrap());
    assert_eq!(format!("{sa:?}"), format!("{sb:?}"));
}

#[test]
fn state_names_and_load_errors_are_typed() {
    let g = gpu();
    let p = param(g, "0.weight", &[3, 4], 50, DType::F16);
    let scaler = LossScaler::new(g, ScalerConfig::default()).unwrap();
    let opt = AdamW::new(g, &[&p], AdamConfig::default(), &scaler).unwrap();
    p.grad.write_f32(&[0.5; 12]).unwrap();
    step(g, &opt);
    let state = opt.state_blocking().unwrap();
    let names: Vec<&str> = state.iter().map(|t| t.name.as_str()).collect();
    for want in [
        "optim.0.weight.exp_avg",
        "optim.0.weight.exp_avg_sq",
        "optim.step",
        "optim.bias_correction1",
        "optim.bias_correction2",
        "optim.lr",
        "scaler.scale",
        "scaler.growth_tracker",
        "scaler.skipped_steps",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let exp_avg = state
        .iter()
        .find(|t| t.name == "optim.0.weight.exp_avg")
        .unwrap();
    assert_eq!(exp_avg.shape, vec![3, 4]);
    let step_t = state.iter().find(|t| t.name == "optim.step").unwrap();
    assert_eq!(step_t.data, StateData::U32(vec![1]));
    let before = stats(&opt);

    let without = |name: &str| -> Vec<StateTensor> {
        state.iter().filter(|t| t.name != name).cloned().collect()
    };
    let replaced = |t: StateTensor| -> Vec<StateTensor> {
        let mut v = without(&t.name);
        v.push(t);
        v
    };
    assert_eq!(
        opt.load_state(&without("optim.0.weight.exp_avg_sq")),
        Err(Error::MissingTensor {
            name: "optim.0.weight.exp_avg_sq".into()
        })
    );
    assert!(matches!(
        opt.load_state(&without("scaler.scale")),
        Err(Error::MissingTensor { .. })
    ));
    assert!(matches!(
        opt.load_state(&replaced(StateTensor::f32(
            "optim.0.weight.exp_avg",
            &[4, 3],
            vec![0.0; 12]
        ))),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        opt.load_state(&replaced(StateTensor::f32("optim.step", &[1], vec![1.0]))),
        Err(Error::ShapeMismatch { .. })
    ));
    // A failed load wrote nothing.
    assert_eq!(stats(&opt), before);

    // Extra tensors (model weights in the same checkpoint) are ignored.
    let mut with_extra = state.clone();
    with_extra.push(StateTensor::f32("0.weight", &[3, 4], vec![0.0; 12]));
    opt.load_state(&with_extra).unwrap();
    assert_eq!(stats(&opt), before);

    // Bad parameter lists.
    assert!(matches!(
        AdamW::new(g, &[], AdamConfig::default(), &scaler),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        AdamW::new(g, &[&p, &p], AdamConfig::default(), &scaler),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        AdamW::new(
            g,
            &[&p],
            AdamConfig {
                betas: (0.9, 1.0),
                ..Default::default()
            },
            &scaler
        ),
        Err(Error::InvalidArgument(_))
    ));
}

/// A gradient longer than the check's 1024 workgroups x 2048 elements: the grid-stride
/// loop must reach the last element (norm and found-inf).
#[test]
fn a_large_gradient_is_checked_to_its_last_element() {
    let g = gpu();
    let n = 256 * 8 * 1024 + 4099;
    let p = Param::from_f32(g, "big", &[n], &vec![0.5; n], DType::F32).unwrap();
    let scaler = LossScaler::new(g, ScalerConfig::default()).unwrap();
    let opt = AdamW::new(g, &[&p], AdamConfig::default(), &scaler).unwrap();
    let grad: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 0.25).collect();
    let norm = grad.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let scaled: Vec<f32> = grad.iter().map(|x| x * 65536.0).collect();
    p.grad.write_f32(&scaled).unwrap();
    step(g, &opt);
    let s = stats(&opt);
    assert!(!s.last_step_skipped);
    assert!(((s.last_grad_norm as f64 - norm) / norm).abs() < 1e-5);

    let mut poisoned = scaled;
    poisoned[n - 1] = f32::NAN;
    p.grad.write_f32(&poisoned).unwrap();
    let before = bits(&p.master);
    step(g, &opt);
    let s = stats(&opt);
    assert!(
        s.last_step_skipped,
        "a NaN in the last element must be found"
    );
    assert_eq!(bits(&p.master), before);
}

/// Overflow diagnostics: a forced inf in one tensor's gradient, over several steps, is
/// reported with that tensor's name and count (counted on the GPU, read with the stats);
/// a NaN in another tensor on one step is counted separately; clean tensors are absent.
#[test]
fn overflowing_tensors_are_named_and_counted() {
    let g = gpu();
    let ps = [
        param(g, "0.weight", &[3, 7], 1, DType::F16),
        param(g, "0.bias", &[7], 2, DType::F16),
        param(g, "1.weight", &[7, 2], 3, DType::F16),
    ];
    let refs: Vec<&Param> = ps.iter().collect();
    let scaler = LossScaler::new(g, ScalerConfig::default()).unwrap();
    let opt = AdamW::new(g, &refs, AdamConfig::default(), &scaler).unwrap();
    assert_eq!(opt.overflow_tensors_blocking().unwrap(), vec![]);
    for k in 0..5 {
        for (i, p) in ps.iter().enumerate() {
            let mut v = random_vec(&mut rng(50 + i as u64), p.len(), 1.0);
            if i == 2 && k != 1 {
                v[p.len() - 1] = f32::INFINITY; // 4 of 5 steps
            }
            if i == 0 && k == 3 {
                v[0] = f32::NAN;
            }
            p.grad.write_f32(&v).unwrap();
        }
        step(g, &opt);
    }
    assert_eq!(stats(&opt).skipped_steps, 4);
    assert_eq!(
        opt.overflow_tensors_blocking().unwrap(),
        vec![("0.weight".to_string(), 1), ("1.weight".to_string(), 4)]
    );
}
