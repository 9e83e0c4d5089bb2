//! The error-path suite: every public entry point given wrong shapes, wrong dtypes,
//! zero-size and rank-0 inputs, out-of-range labels, non-finite data, absurd sizes or a
//! lost device answers with a typed `halfgrad::Error` (or the behaviour docs/ERRORS.md
//! documents), never a panic. GPU tests run on the default adapter (lavapipe in CI).

mod common;

use common::{gpu, gpu_packed, submit_with};
use halfgrad::amp::{constant_scale, LossScaler, OverflowFlag, Policy, Precision, ScalerConfig};
use halfgrad::checkpoint::{Checkpoint, NamedTensor};
use halfgrad::data::{Batcher, BatcherState, Dataset, InMemory};
use halfgrad::kernels::{compose, Bind, KernelDef, Slot, Variant, F32_ONLY};
use halfgrad::nn::{
    Activation, ActivationLayer, LayerCtx, LayerNorm, Linear, Mlp, MlpConfig, MlpOptions, Node,
    Param, SoftmaxCrossEntropy, SplitMix64,
};
use halfgrad::ops::adam::{self, StateBuffers, UpdateTensors};
use halfgrad::ops::matmul::{matmul, MatmulKernel, MatmulOptions};
use halfgrad::ops::{activation, cast, layernorm, loss_scale, reduce, softmax_xent};
use halfgrad::optim::{AdamConfig, AdamW, StateTensor};
use halfgrad::train::{TrainConfig, Trainer};
use halfgrad::{DType, Error, Gpu, GpuOptions, Tensor};

/// Asserts that `$e` is `Err` matching `$pat` and prints the message (the suite doubles
/// as a catalogue of what users see).
macro_rules! assert_err {
    ($e:expr, $pat:pat) => {{
        let r = $e;
        match &r {
            Err(e @ $pat) => eprintln!("ok  {:<60} -> {e}", stringify!($e)),
            other => panic!(
                "{}: expected Err({}), got {:?}",
                stringify!($e),
                stringify!($pat),
                other
            ),
        }
    }};
}

fn raw_buffer(g: &Gpu, bytes: u64) -> wgpu::Buffer {
    g.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test raw buffer"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

// ---------------------------------------------------------------------------------------
// Tensor

#[test]
fn tensor_constructors_refuse_bad_shapes_and_lengths() {
    let g = gpu();
    for dt in DType::ALL {
        assert_err!(Tensor::empty(g, &[0], dt), Error::Empty { .. });
        assert_err!(Tensor::empty(g, &[3, 0, 2], dt), Error::Empty { .. });
        assert_err!(Tensor::zeros(g, &[0, 5], dt), Error::Empty { .. });
        assert_err!(Tensor::full(g, &[7, 0], dt, 1.0), Error::Empty { .. });
        // Products that overflow usize: an error, not an arithmetic panic.
        assert_err!(
            Tensor::empty(g, &[usize::MAX, 2], dt),
            Error::InvalidArgument(_)
        );
        assert_err!(
            Tensor::full(g, &[1 << 62, 1 << 3], dt, 0.0),
            Error::InvalidArgument(_)
        );
        // Sizes that fit in a usize but not in a kernel's u32 index or the device: refused
        // before any host vector is allocated (full would need 2^40 host floats).
        assert_err!(Tensor::full(g, &[1 << 40], dt, 0.0), Error::TooLarge { .. });
        assert_err!(
            Tensor::empty(g, &[1 << 20, 1 << 12], dt),
            Error::TooLarge { .. }
        );
        assert_err!(
            Tensor::from_bytes(g, &[usize::MAX, 3], dt, &[]),
            Error::InvalidArgument(_)
        );
    }
    // Rank 0 is a scalar: one element, documented.
    let s = Tensor::from_f32(g, &[], &[2.5], DType::F32).unwrap();
    assert_eq!((s.len(), s.shape()), (1, &[][..]));
    assert_eq!(s.to_f32_vec().unwrap(), [2.5]);
    assert_err!(
        Tensor::from_f32(g, &[], &[], DType::F32),
        Error::DataLength {
            expected: 1,
            got: 0,
            ..
        }
    );
    assert_err!(
        Tensor::from_f32(g, &[2, 3], &[0.0; 5], DType::F16),
        Error::DataLength {
            expected: 6,
            got: 5,
            ..
        }
    );
    assert_err!(
        Tensor::from_f32(g, &[0], &[], DType::F32),
        Error::Empty { .. }
    );
    assert_err!(
        Tensor::from_f16(g, &[4], &[half::f16::ONE; 3]),
        Error::DataLength { .. }
    );
    assert_err!(
        Tensor::from_bf16(g, &[1], &[half::bf16::ONE; 2]),
        Error::DataLength { .. }
    );
    // An odd byte count cannot be f16 / bf16 / f32 data.
    assert_err!(
        Tensor::from_bytes(g, &[2], DType::F16, &[0u8; 3]),
        Error::DataLength { .. }
    );
    assert_err!(
        Tensor::from_bytes(g, &[1], DType::F32, &[0u8; 2]),
        Error::DataLength { .. }
    );

    let t = Tensor::zeros(g, &[2, 3], DType::F16).unwrap();
    assert_err!(t.write_f32(&[1.0; 7]), Error::DataLength { .. });
    assert_err!(t.write_bytes(&[0u8; 11]), Error::DataLength { .. });
    assert_err!(t.reshape(&[4, 2]), Error::ShapeMismatch { .. });
    assert_err!(t.reshape(&[usize::MAX, 2]), Error::ShapeMismatch { .. });
    assert_err!(t.reshape(&[0, 6]), Error::ShapeMismatch { .. });
    assert_eq!(t.reshape(&[3, 2]).unwrap().shape(), [3, 2]);
    let f = Tensor::zeros(g, &[1], DType::F32).unwrap();
    assert_eq!(f.reshape(&[]).unwrap().len(), 1);
    assert_err!(f.to_u16_bits(), Error::DTypeMismatch { .. });
    assert_err!(
        g.read_buffer_blocking(f.buffer(), 1 << 20),
        Error::InvalidArgument(_)
    );
}

#[test]
fn nonfinite_values_upload_and_round_as_documented() {
    // Tensors carry any bit pattern: NaN and inf upload, cast and download unchanged in
    // f32; rounding to f16 / bf16 overflows to inf and keeps NaN a NaN (like `half`).
    let g = gpu();
    let values = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e6,
        f32::MIN,
        0.0,
    ];
    let x = Tensor::from_f32(g, &[values.len()], &values, DType::F32).unwrap();
    let back = x.to_f32_vec().unwrap();
    for (a, b) in values.iter().zip(&back) {
        assert_eq!(a.to_bits(), b.to_bits());
    }
    for dt in [DType::F16, DType::BF16] {
        let host = Tensor::from_f32(g, &[values.len()], &values, dt)
            .unwrap()
            .to_u16_bits()
            .unwrap();
        let device = cast::cast_to(g, &x, dt).unwrap().to_u16_bits().unwrap();
        assert_eq!(host, device, "{dt}: host rounding and GPU cast agree");
        let decoded = dt.decode(&dt.encode(&values));
        assert!(decoded[0].is_nan() && decoded[1] == f32::INFINITY);
        assert_eq!(decoded[2], f32::NEG_INFINITY);
        if dt == DType::F16 {
            assert_eq!(decoded[3], f32::INFINITY, "1e6 overflows f16");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Kernels and dispatch

static NEEDS_F16: KernelDef = KernelDef {
    name: "test/needs_f16",
    source: "//!kernel main\n@compute @workgroup_size(1) fn main() {}\n",
    section: "main",
    slots: &[],
    params: false,
    cooperative_matrix: false,
    needs_f16: true,
};

static NEEDS_COOP: KernelDef = KernelDef {
    name: "test/needs_coop",
    source: "//!kernel main\n@compute @workgroup_size(1) fn main() {}\n",
    section: "main",
    slots: &[],
    params: false,
    cooperative_matrix: true,
    needs_f16: false,
};

static NO_SECTION: KernelDef = KernelDef {
    name: "test/no_section",
    source: "//!kernel other\n@compute @workgroup_size(1) fn main() {}\n",
    section: "main",
    slots: &[Slot::read("x", F32_ONLY)],
    params: false,
    cooperative_matrix: false,
    needs_f16: false,
};

static BROKEN_WGSL: KernelDef = KernelDef {
    name: "test/broken",
    source: "//!kernel main\n@compute @workgroup_size(1) fn main() { let a: u32 = 1.5; }\n",
    section: "main",
    slots: &[],
    params: false,
    cooperative_matrix: false,
    needs_f16: false,
};

#[test]
fn dispatch_refuses_wrong_bindings_features_and_variants() {
    let g = gpu();
    let f32t = Tensor::zeros(g, &[8], DType::F32).unwrap();
    let f16t = Tensor::zeros(g, &[8], DType::F16).unwrap();
    let buf = raw_buffer(g, 64);
    let flag = OverflowFlag::new(g).unwrap();
    // loss_scale/check: (grad: f32 tensor, scaler: u32, partials: f32, found_inf: atomic).
    let def = &loss_scale::CHECK;
    let params = [0u8; 16];
    assert_err!(
        g.dispatch(def, &[Bind::Tensor(&f32t)], &params, &[], [1, 1, 1]),
        Error::InvalidArgument(_)
    );
    assert_err!(
        g.dispatch(
            def,
            &[
                Bind::Tensor(&f16t),
                Bind::Buffer(&buf),
                Bind::Buffer(&buf),
                Bind::Buffer(flag.buffer())
            ],
            &params,
            &[],
            [1, 1, 1]
        ),
        Error::DTypeMismatch {
            got: DType::F16,
            ..
        }
    );
    assert_err!(
        g.dispatch(
            def,
            &[
                Bind::Buffer(&buf),
                Bind::Buffer(&buf),
                Bind::Buffer(&buf),
                Bind::Buffer(flag.buffer())
            ],
            &params,
            &[],
            [1, 1, 1]
        ),
        Error::InvalidArgument(_)
    );
    assert_err!(
        g.dispatch(
            def,
            &[
                Bind::Tensor(&f32t),
                Bind::Tensor(&f32t),
                Bind::Buffer(&buf),
                Bind::Buffer(flag.buffer())
            ],
            &params,
            &[],
            [1, 1, 1]
        ),
        Error::InvalidArgument(_)
    );
    // A variant naming the wrong number of dtypes, a missing section, WGSL that does not
    // compile: typed shader errors.
    assert_err!(
        g.pipeline(&cast::CAST, &[DType::F32], &[]),
        Error::Shader { .. }
    );
    assert_err!(
        compose(&NO_SECTION, &Variant::new(&[DType::F32], false)),
        Error::Shader { .. }
    );
    assert_err!(
        compose(&cast::CAST, &Variant::new(&[DType::F32], false)),
        Error::Shader { .. }
    );
    assert_err!(g.pipeline(&BROKEN_WGSL, &[], &[]), Error::Shader { .. });
    // Missing adapter features.
    assert_err!(
        gpu_packed().pipeline(&NEEDS_F16, &[], &[]),
        Error::MissingFeature {
            feature: "SHADER_F16",
            ..
        }
    );
    if g.caps().cooperative_matrix.is_none() {
        assert_err!(
            g.pipeline(&NEEDS_COOP, &[], &[]),
            Error::MissingFeature { .. }
        );
    } else {
        eprintln!("skipping the missing-cooperative-matrix case: this adapter has them");
    }
    // The device is still usable after all of these.
    g.check().unwrap();
    let y = cast::cast_to(g, &f32t, DType::BF16).unwrap();
    assert_eq!(y.to_f32_vec().unwrap(), [0.0; 8]);
}

#[test]
fn no_adapter_is_a_typed_error() {
    let opts = GpuOptions {
        adapter: Some("no adapter is called this 7f3a".into()),
        ..GpuOptions::from_env()
    };
    assert_err!(Gpu::with_options_blocking(opts), Error::NoAdapter(_));
}

// ---------------------------------------------------------------------------------------
// Ops

#[test]
fn ops_refuse_wrong_shapes_and_dtypes_and_accept_rank_0() {
    let g = gpu();
    // cast: element counts must agree; shapes may differ (it is elementwise).
    let x = Tensor::from_f32(g, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], DType::F32).unwrap();
    let y = Tensor::zeros(g, &[5], DType::F16).unwrap();
    assert_err!(cast::cast(g, &x, &y), Error::ShapeMismatch { .. });
    let scalar = Tensor::from_f32(g, &[], &[-3.25], DType::BF16).unwrap();
    let widened = cast::cast_to(g, &scalar, DType::F32).unwrap();
    assert_eq!(
        (widened.shape(), widened.to_f32_vec().unwrap()),
        (&[][..], vec![-3.25])
    );

    // loss_scale::check: f32 gradients only; the partials buffer must be big enough.
    let scaler = LossScaler::new(g, ScalerConfig::default()).unwrap();
    let partials = raw_buffer(g, 16);
    let grad16 = Tensor::zeros(g, &[4], DType::F16).unwrap();
    assert_err!(
        loss_scale::check(
            g,
            &grad16,
            scaler.scale_buffer(),
            &partials,
            0,
            scaler.flag()
        ),
        Error::DTypeMismatch { .. }
    );
    let grad = Tensor::zeros(g, &[4], DType::F32).unwrap();
    assert_err!(
        loss_scale::check(g, &grad, scaler.scale_buffer(), &partials, 4, scaler.flag()),
        Error::InvalidArgument(_)
    );
    assert!(
        loss_scale::check(g, &grad, scaler.scale_buffer(), &partials, 3, scaler.flag()).is_ok()
    );

    // adam::update: every tensor has the master's shape; master / moments are f32.
    let work = raw_buffer(g, 32);
    let hyper = raw_buffer(g, 32);
    let state = StateBuffers {
        scaler: scaler.scale_buffer(),
        work: &work,
        hyper: &hyper,
    };
    let m = Tensor::zeros(g, &[3, 2], DType::F32).unwrap();
    let wrong = Tensor::zeros(g, &[2, 3], DType::F32).unwrap();
    let low_wrong = Tensor::zeros(g, &[6], DType::F16).unwrap();
    let m16 = Tensor::zeros(g, &[3, 2], DType::F16).unwrap();
    let ut = |master, grad, low| UpdateTensors {
        master,
        grad,
        exp_avg: &m,
        exp_avg_sq: &m,
        low,
    };
    assert_err!(
        adam::update(g, &ut(&m, &wrong, None), state),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        adam::update(g, &ut(&m, &m, Some(&low_wrong)), state),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        adam::update(g, &ut(&m16, &m16, None), state),
        Error::DTypeMismatch { .. }
    );
    assert!(adam::update(g, &ut(&m, &m, Some(&m16)), state).is_ok());
}

// ---------------------------------------------------------------------------------------
// amp, nn, optim

#[test]
fn scaler_and_precision_refuse_bad_configuration() {
    let g = gpu();
    let base = ScalerConfig::default();
    let bad = [
        ScalerConfig {
            init_scale: f32::NAN,
            ..base.clone()
        },
        ScalerConfig {
            init_scale: 0.0,
            ..base.clone()
        },
        ScalerConfig {
            init_scale: f32::INFINITY,
            ..base.clone()
        },
        ScalerConfig {
            growth_factor: 1.0,
            ..base.clone()
        },
        ScalerConfig {
            backoff_factor: 1.0,
            ..base.clone()
        },
        ScalerConfig {
            backoff_factor: f32::NAN,
            ..base.clone()
        },
        ScalerConfig {
            growth_interval: 0,
            ..base.clone()
        },
        ScalerConfig {
            min_scale: Some(f32::NAN),
            ..base.clone()
        },
        ScalerConfig {
            min_scale: Some(4.0),
            max_scale: Some(2.0),
            init_scale: 3.0,
            ..base.clone()
        },
    ];
    for c in bad {
        assert_err!(LossScaler::new(g, c.clone()), Error::InvalidArgument(_));
    }
    let kv = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    assert_err!(
        base.clone().with_kv(&kv("scaler.init_scale", "lots")),
        Error::InvalidArgument(_)
    );
    assert_err!(
        base.clone().with_kv(&kv("scaler.growth_interval", "-1")),
        Error::InvalidArgument(_)
    );
    assert_err!("f17".parse::<Precision>(), Error::InvalidArgument(_));
    assert_err!("".parse::<DType>(), Error::InvalidArgument(_));
}

fn param(g: &Gpu, name: &str, shape: &[usize]) -> Param {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| (i as f32 - 1.5) * 0.25).collect();
    Param::from_f32(g, name, shape, &values, DType::F16).unwrap()
}

#[test]
fn params_and_adamw_refuse_bad_input() {
    let g = gpu();
    assert_err!(
        Param::from_f32(g, "w", &[2, 2], &[1.0; 3], DType::F16),
        Error::DataLength { .. }
    );
    assert_err!(
        Param::from_f32(g, "w", &[0, 2], &[], DType::F32),
        Error::Empty { .. }
    );
    let scaler = LossScaler::new(g, ScalerConfig::default()).unwrap();
    let p = param(g, "w", &[3, 2]);
    let q = param(g, "b", &[2]);
    let cfg = AdamConfig::default();
    assert_err!(
        AdamW::new(g, &[], cfg.clone(), &scaler),
        Error::InvalidArgument(_)
    );
    assert_err!(
        AdamW::new(g, &[&p, &p], cfg.clone(), &scaler),
        Error::InvalidArgument(_)
    );
    for bad in [
        AdamConfig {
            lr: f32::NAN,
            ..cfg.clone()
        },
        AdamConfig {
            lr: -1.0,
            ..cfg.clone()
        },
        AdamConfig {
            lr: f32::INFINITY,
            ..cfg.clone()
        },
        AdamConfig {
            betas: (0.9, 1.0),
            ..cfg.clone()
        },
        AdamConfig {
            betas: (f32::NAN, 0.999),
            ..cfg.clone()
        },
        AdamConfig {
            eps: f32::NAN,
            ..cfg.clone()
        },
        AdamConfig {
            weight_decay: -0.1,
            ..cfg.clone()
        },
        AdamConfig {
            max_grad_norm: Some(0.0),
            ..cfg.clone()
        },
        AdamConfig {
            max_grad_norm: Some(f32::NAN),
            ..cfg.clone()
        },
    ] {
        assert_err!(
            AdamW::new(g, &[&p], bad.clone(), &scaler),
            Error::InvalidArgument(_)
        );
    }
    // A parameter whose master is not f32, or whose gradient has another shape.
    let f16_master = Param {
        master: Tensor::zeros(g, &[3, 2], DType::F16).unwrap(),
        ..p.clone()
    };
    assert_err!(
        AdamW::new(g, &[&f16_master], cfg.clone(), &scaler),
        Error::DTypeMismatch { .. }
    );
    let wrong_grad = Param {
        grad: Tensor::zeros(g, &[2, 3], DType::F32).unwrap(),
        ..p.clone()
    };
    assert_err!(
        AdamW::new(g, &[&wrong_grad], cfg.clone(), &scaler),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        cfg.clone()
            .with_kv(&[("optim.lr".to_string(), "fast".to_string())]),
        Error::InvalidArgument(_)
    );

    let opt = AdamW::new(g, &[&p, &q], cfg.clone(), &scaler).unwrap();
    assert_err!(opt.set_lr(f32::NAN), Error::InvalidArgument(_));
    assert_err!(opt.set_lr(-1e-3), Error::InvalidArgument(_));

    // load_state checks everything before writing anything.
    let good = opt.state_blocking().unwrap();
    let without = |name: &str| -> Vec<StateTensor> {
        good.iter().filter(|t| t.name != name).cloned().collect()
    };
    let replaced = |name: &str, t: StateTensor| -> Vec<StateTensor> {
        let mut v = without(name);
        v.push(t);
        v
    };
    assert_err!(opt.load_state(&[]), Error::MissingTensor { .. });
    assert_err!(
        opt.load_state(&without("scaler.scale")),
        Error::MissingTensor { .. }
    );
    assert_err!(
        opt.load_state(&replaced(
            "optim.w.exp_avg",
            StateTensor::f32("optim.w.exp_avg", &[2, 3], vec![0.0; 6])
        )),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        opt.load_state(&replaced(
            "optim.step",
            StateTensor::f32("optim.step", &[1], vec![3.0])
        )),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        opt.load_state(&replaced(
            "scaler.scale",
            StateTensor::f32("scaler.scale", &[1], vec![f32::NAN])
        )),
        Error::InvalidArgument(_)
    );
    assert_err!(
        opt.load_state(&replaced(
            "optim.lr",
            StateTensor::f32("optim.lr", &[1], vec![f32::INFINITY])
        )),
        Error::InvalidArgument(_)
    );
    assert_eq!(
        opt.state_blocking().unwrap(),
        good,
        "a refused load wrote nothing"
    );

    assert_err!(
        StateTensor::from_le_bytes("x", safetensors::Dtype::F32, &[2], &[0u8; 7]),
        Error::DataLength { .. }
    );
    assert_err!(
        StateTensor::from_le_bytes("x", safetensors::Dtype::F32, &[usize::MAX, 2], &[]),
        Error::DataLength { .. }
    );
    assert_err!(
        StateTensor::from_le_bytes("x", safetensors::Dtype::U8, &[4], &[0u8; 16]),
        Error::InvalidArgument(_)
    );
}

/// One optimizer step with the gradient set from the host.
fn step_with_grad(g: &Gpu, opt: &AdamW, p: &Param, grad: &[f32]) {
    p.grad.write_f32(grad).unwrap();
    submit_with(g, |enc| opt.clear_flag(enc), |pass| opt.encode_step(pass)).unwrap();
}

#[test]
fn a_rank_0_parameter_trains_and_a_nonfinite_gradient_is_skipped() {
    // Rank-0 parameters (a learned scalar) are ordinary one-element tensors.
    let g = gpu();
    let scaler = LossScaler::new(g, ScalerConfig::default()).unwrap();
    let p = Param::from_f32(g, "temperature", &[], &[1.0], DType::F16).unwrap();
    let opt = AdamW::new(
        g,
        &[&p],
        AdamConfig {
            lr: 0.5,
            ..Default::default()
        },
        &scaler,
    )
    .unwrap();
    // A NaN gradient (what NaN input data produces): the step is skipped, the weight
    // is untouched, the scale backs off.
    step_with_grad(g, &opt, &p, &[f32::NAN]);
    let s = opt.stats_blocking().unwrap();
    assert!(s.last_step_skipped && s.skipped_steps == 1 && s.steps == 0);
    assert_eq!(s.scale, 32768.0);
    assert_eq!(p.master.to_f32_vec().unwrap(), [1.0]);
    // A clean gradient (scaled, as the backward writes it) moves the weight by -lr.
    step_with_grad(g, &opt, &p, &[2.0 * s.scale]);
    let s = opt.stats_blocking().unwrap();
    assert!(!s.last_step_skipped && s.steps == 1);
    let w = p.master.to_f32_vec().unwrap()[0];
    assert!((w - 0.5).abs() < 1e-4, "{w}");
    assert_eq!(
        p.low.as_ref().unwrap().to_f32_vec().unwrap(),
        [DType::F16.round(w)]
    );
    // An inf gradient too.
    step_with_grad(g, &opt, &p, &[f32::NEG_INFINITY]);
    assert_eq!(opt.stats_blocking().unwrap().skipped_steps, 2);
    assert_eq!(p.master.to_f32_vec().unwrap(), [w]);
}

// ---------------------------------------------------------------------------------------
// data

#[test]
fn data_sets_and_batchers_refuse_bad_input() {
    assert_err!(
        InMemory::new(vec![], vec![], 0, 10),
        Error::InvalidArgument(_)
    );
    assert_err!(
        InMemory::new(vec![], vec![], 4, 0),
        Error::InvalidArgument(_)
    );
    assert_err!(
        InMemory::new(vec![0.0; 7], vec![0, 1], 4, 2),
        Error::DataLength {
            expected: 8,
            got: 7,
            ..
        }
    );
    assert_err!(
        InMemory::new(vec![0.0; 6], vec![0, 1, 3], 2, 3),
        Error::LabelOutOfRange {
            index: 2,
            label: 3,
            classes: 3
        }
    );
    assert_err!(
        InMemory::new(vec![], vec![0, 0], usize::MAX, 2),
        Error::InvalidArgument(_)
    );
    // Non-finite features are data, not an error: training detects them through the loss
    // scaler (the step is skipped and counted) and the CLI reports the count.
    let d = InMemory::new(vec![f32::NAN, 1.0, f32::INFINITY, 0.0], vec![1, 0], 2, 2).unwrap();
    // An empty data set is allowed as a value; a batcher over it is not.
    let empty = InMemory::new(vec![], vec![], 3, 2).unwrap();
    assert!(empty.is_empty());
    assert_err!(Batcher::new(empty.len(), 1, 0), Error::InvalidArgument(_));

    let (mut x, mut y) = (Vec::new(), Vec::new());
    assert_err!(d.gather(&[0, 2], &mut x, &mut y), Error::InvalidArgument(_));
    assert_err!(d.slice(1..3), Error::InvalidArgument(_));
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 2..1;
    assert_err!(d.slice(backwards), Error::InvalidArgument(_));
    assert_eq!(d.slice(1..1).unwrap().len(), 0);

    assert_err!(Batcher::new(10, 0, 1), Error::InvalidArgument(_));
    assert_err!(Batcher::new(10, 11, 1), Error::InvalidArgument(_));
    let state = |position| BatcherState {
        len: 10,
        batch: 3,
        seed: 1,
        position,
    };
    assert_err!(
        Batcher::from_state(state(u64::MAX)),
        Error::InvalidArgument(_)
    );
    assert!(Batcher::from_state(state(Batcher::MAX_POSITION)).is_ok());
    let mut b = Batcher::new(10, 3, 1).unwrap();
    assert_err!(b.skip_to(u64::MAX), Error::InvalidArgument(_));
    assert_err!(b.skip_to(u64::MAX / 3), Error::InvalidArgument(_));
    assert_err!(b.next_batch(&d, &mut x, &mut y), Error::InvalidArgument(_));
    // The furthest accepted position still produces batches.
    let mut far = Batcher::from_state(state(Batcher::MAX_POSITION)).unwrap();
    assert_eq!(far.next_indices().len(), 3);
}

// ---------------------------------------------------------------------------------------
// checkpoint (the file parser has its own suite, tests/checkpoint.rs, and the fuzz
// campaign, `cargo xtask fuzz`)

#[test]
fn checkpoint_api_errors_are_typed() {
    assert_err!(
        NamedTensor::from_f32("w", &[2, 2], &[1.0; 3]),
        Error::DataLength { .. }
    );
    assert_err!(
        NamedTensor::from_f32("w", &[usize::MAX, 2], &[]),
        Error::DataLength { .. }
    );
    let mut c = Checkpoint::new();
    c.push_f32("w", &[2], &[1.0, 2.0]).unwrap();
    assert_err!(c.push_f32("w", &[1], &[3.0]), Error::Checkpoint { .. });
    assert_err!(c.push_f32("", &[1], &[3.0]), Error::Checkpoint { .. });
    assert_err!(
        c.push_f32("__metadata__", &[1], &[3.0]),
        Error::Checkpoint { .. }
    );
    assert_err!(
        c.push(NamedTensor {
            name: "short".into(),
            shape: vec![4],
            dtype: DType::F16.into(),
            data: vec![0; 7],
        }),
        Error::Checkpoint { .. }
    );
    // Zero-element tensors are fine in a checkpoint (not on the GPU).
    c.push_f32("nothing", &[0, 3], &[]).unwrap();
    c.push(NamedTensor::encode("h", &[1], DType::F16, &[1.0]).unwrap())
        .unwrap();
    assert_err!(c.get_f32("missing", &[2]), Error::Checkpoint { .. });
    assert_err!(c.get_f32("w", &[1, 2]), Error::Checkpoint { .. });
    assert_err!(c.get_f32("h", &[1]), Error::Checkpoint { .. });
    assert_err!(c.expect_names(&["w"]), Error::Checkpoint { .. });
    assert_err!(
        c.expect_names(&["w", "nothing", "h", "more"]),
        Error::Checkpoint { .. }
    );
    c.set_meta("step", "seven");
    assert_err!(c.meta("epoch"), Error::Checkpoint { .. });
    assert_err!(c.meta_parse::<u64>("step"), Error::Checkpoint { .. });
    assert_err!(c.expect_meta("step", "7"), Error::Checkpoint { .. });
    assert_err!(
        Checkpoint::from_bytes(&[], "empty.safetensors"),
        Error::Checkpoint { .. }
    );
    let bad_data = NamedTensor {
        name: "x".into(),
        shape: vec![3],
        dtype: DType::F32.into(),
        data: vec![0; 4],
    };
    assert_err!(bad_data.to_f32(), Error::Checkpoint { .. });

    let dir = std::env::temp_dir().join(format!("halfgrad-errors-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert_err!(
        Checkpoint::load(&dir.join("nope.safetensors")),
        Error::Io { .. }
    );
    assert_err!(c.save(&dir.join("a/b.safetensors")), Error::Io { .. });
    assert_err!(c.save(std::path::Path::new("/")), Error::Io { .. });
    std::fs::create_dir_all(dir.join("is_a_folder.safetensors")).unwrap();
    assert_err!(
        c.save(&dir.join("is_a_folder.safetensors")),
        Error::Io { .. }
    );
    assert_err!(
        Checkpoint::load(&dir.join("is_a_folder.safetensors")),
        Error::Io { .. }
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// device loss

#[test]
fn after_device_loss_every_call_returns_device_lost() {
    // A device of its own: the shared one must survive for the other tests.
    let g = Gpu::with_options_blocking(GpuOptions::from_env()).unwrap();
    let scaler = LossScaler::new(&g, ScalerConfig::default()).unwrap();
    let p = param(&g, "w", &[4, 3]);
    let opt = AdamW::new(&g, &[&p], AdamConfig::default(), &scaler).unwrap();
    let x = Tensor::from_f32(&g, &[5], &[1.0; 5], DType::F32).unwrap();
    let y = Tensor::zeros(&g, &[5], DType::F16).unwrap();
    let d = cast::cast(&g, &x, &y).unwrap();
    g.run(&[&d]).unwrap();
    opt.submit_step().unwrap();
    let state = opt.state_blocking().unwrap();

    g.simulate_device_loss();

    assert_err!(g.check(), Error::DeviceLost(_));
    assert_err!(Tensor::empty(&g, &[4], DType::F32), Error::DeviceLost(_));
    assert_err!(
        Tensor::from_f32(&g, &[2], &[1.0, 2.0], DType::F16),
        Error::DeviceLost(_)
    );
    assert_err!(Tensor::zeros(&g, &[2], DType::BF16), Error::DeviceLost(_));
    assert_err!(x.to_f32_vec(), Error::DeviceLost(_));
    assert_err!(y.to_u16_bits(), Error::DeviceLost(_));
    assert_err!(x.write_f32(&[0.0; 5]), Error::DeviceLost(_));
    assert_err!(cast::cast(&g, &x, &y), Error::DeviceLost(_));
    assert_err!(cast::cast_to(&g, &x, DType::F16), Error::DeviceLost(_));
    assert_err!(
        g.pipeline(&cast::CAST, &[DType::F32, DType::BF16], &[]),
        Error::DeviceLost(_)
    );
    assert_err!(g.run(&[&d]), Error::DeviceLost(_));
    assert_err!(g.wait_idle(), Error::DeviceLost(_));
    assert_err!(OverflowFlag::new(&g), Error::DeviceLost(_));
    assert_err!(
        LossScaler::new(&g, ScalerConfig::default()),
        Error::DeviceLost(_)
    );
    assert_err!(
        Param::from_f32(&g, "v", &[2], &[0.0; 2], DType::F16),
        Error::DeviceLost(_)
    );
    assert_err!(
        AdamW::new(&g, &[&p], AdamConfig::default(), &scaler),
        Error::DeviceLost(_)
    );
    assert_err!(opt.submit_step(), Error::DeviceLost(_));
    assert_err!(opt.stats_blocking(), Error::DeviceLost(_));
    assert_err!(opt.state_blocking(), Error::DeviceLost(_));
    assert_err!(opt.set_lr(1e-4), Error::DeviceLost(_));
    assert_err!(opt.load_state(&state), Error::DeviceLost(_));
    assert_err!(scaler.flag().is_raised_blocking(&g), Error::DeviceLost(_));
    // A hand-encoded step: encoding on a lost device does not panic; submit says so.
    assert_err!(
        submit_with(&g, |enc| opt.clear_flag(enc), |pass| opt.encode_step(pass)),
        Error::DeviceLost(_)
    );
    // Dropping everything that lived on the lost device is quiet.
    drop((opt, p, x, y, d, scaler));

    // Recovery: a new device works, and the saved state loads into a new optimizer.
    let g2 = Gpu::with_options_blocking(GpuOptions::from_env()).unwrap();
    let scaler2 = LossScaler::new(&g2, ScalerConfig::default()).unwrap();
    let p2 = param(&g2, "w", &[4, 3]);
    let opt2 = AdamW::new(&g2, &[&p2], AdamConfig::default(), &scaler2).unwrap();
    opt2.load_state(&state).unwrap();
    assert_eq!(opt2.state_blocking().unwrap(), state);
}

// ---------------------------------------------------------------------------------------
// Layer ops (matmul, softmax cross-entropy, activation, layer norm, column sums)

#[test]
fn layer_ops_refuse_wrong_shapes_and_dtypes() {
    let g = gpu();
    let flag = OverflowFlag::new(g).unwrap();
    let t = |shape: &[usize], dt| Tensor::zeros(g, shape, dt).unwrap();
    let (a, b, c) = (
        t(&[3, 4], DType::F16),
        t(&[4, 5], DType::F16),
        t(&[3, 5], DType::F32),
    );
    let o = MatmulOptions::default();
    assert!(matmul(g, &a, &b, &c, None, Some(&flag), &o).is_ok());
    assert_err!(
        matmul(g, &t(&[12], DType::F16), &b, &c, None, None, &o),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        matmul(g, &t(&[], DType::F16), &b, &c, None, None, &o),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        matmul(g, &a, &t(&[5, 5], DType::F16), &c, None, None, &o),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        matmul(g, &a, &b, &t(&[5, 3], DType::F32), None, None, &o),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        matmul(g, &a, &b, &c, Some(&t(&[3], DType::F32)), None, &o),
        Error::ShapeMismatch { .. }
    );
    let acc = MatmulOptions {
        accumulate: true,
        ..o
    };
    assert_err!(
        matmul(g, &a, &b, &t(&[3, 5], DType::F16), None, None, &acc),
        Error::DTypeMismatch { .. }
    );
    let coop = MatmulOptions {
        kernel: MatmulKernel::Coop,
        ..o
    };
    assert_err!(
        matmul(g, &t(&[3, 4], DType::BF16), &b, &c, None, None, &coop),
        Error::DTypeMismatch { .. } | Error::MissingFeature { .. }
    );

    // softmax cross-entropy: (B, V) logits, (B) u32 labels, f32 outputs.
    let logits = t(&[4, 3], DType::F16);
    let small_labels = Tensor::from_u32(g, &[1], &[0]).unwrap();
    let labels = Tensor::from_u32(g, &[4], &[0; 4]).unwrap();
    let (lse, losses, loss) = (
        t(&[4], DType::F32),
        t(&[4], DType::F32),
        t(&[1], DType::F32),
    );
    assert!(softmax_xent::forward(g, &logits, &labels, &lse, &losses, &loss).is_ok());
    assert_err!(
        softmax_xent::forward(g, &logits, &small_labels, &lse, &losses, &loss),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        softmax_xent::forward(g, &logits, &labels, &t(&[4], DType::F16), &losses, &loss),
        Error::DTypeMismatch { .. } | Error::ShapeMismatch { .. }
    );
    assert_err!(
        softmax_xent::forward(g, &t(&[12], DType::F16), &labels, &lse, &losses, &loss),
        Error::ShapeMismatch { .. }
    );
    let tiny_scale = raw_buffer(g, 4);
    assert_err!(
        softmax_xent::backward(
            g,
            &logits,
            &lse,
            &labels,
            &tiny_scale,
            &t(&[3, 4], DType::F16),
            &flag
        ),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        softmax_xent::check_labels(&[0, 2, 3], 3),
        Error::LabelOutOfRange {
            index: 2,
            label: 3,
            classes: 3
        }
    );
    assert_err!(
        softmax_xent::check_labels(&[u32::MAX], 10),
        Error::LabelOutOfRange { .. }
    );

    // activation, layer norm, column sums.
    let x = t(&[2, 3], DType::BF16);
    assert_err!(
        activation::forward(g, Activation::Gelu, &x, &t(&[3, 2], DType::BF16), &flag),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        activation::backward(g, Activation::Relu, &x, &x, &t(&[6], DType::F32), &flag),
        Error::ShapeMismatch { .. }
    );
    assert_err!("swish".parse::<Activation>(), Error::InvalidArgument(_));
    let (gamma, beta) = (t(&[3], DType::F32), t(&[3], DType::F32));
    let (mean, rstd) = (t(&[2], DType::F32), t(&[2], DType::F32));
    let stats = || layernorm::Stats {
        mean: &mean,
        rstd: &rstd,
    };
    assert!(layernorm::forward(g, &x, &gamma, &beta, 1e-5, stats(), &x, &flag).is_ok());
    for eps in [f32::NAN, -1e-5, f32::INFINITY] {
        assert_err!(
            layernorm::forward(g, &x, &gamma, &beta, eps, stats(), &x, &flag),
            Error::InvalidArgument(_)
        );
    }
    assert_err!(
        layernorm::forward(g, &x, &t(&[2], DType::F32), &beta, 1e-5, stats(), &x, &flag),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        layernorm::forward(g, &x, &t(&[3], DType::F16), &beta, 1e-5, stats(), &x, &flag),
        Error::DTypeMismatch { .. } | Error::ShapeMismatch { .. }
    );
    assert_err!(
        reduce::col_sum(g, &x, &t(&[2], DType::F32), None, false),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        reduce::col_sum(g, &x, &t(&[3], DType::F16), None, false),
        Error::DTypeMismatch { .. }
    );
    assert_err!(
        reduce::col_sum(g, &t(&[6], DType::F32), &t(&[6], DType::F32), None, false),
        Error::ShapeMismatch { .. }
    );
    // Past ONE_PASS_MAX_ROWS rows the sums need their (chunks, C) f32 partial sums; a short
    // matrix takes none.
    let tall = t(&[reduce::ONE_PASS_MAX_ROWS + 1, 3], DType::F32);
    let [chunks, c] = reduce::partial_sums_shape(tall.shape()[0], 3).unwrap();
    for partial in [
        None,
        Some(t(&[chunks + 1, c], DType::F32)),
        Some(t(&[chunks, c], DType::F16)),
    ] {
        assert_err!(
            reduce::col_sum(g, &tall, &t(&[3], DType::F32), partial.as_ref(), false),
            Error::InvalidArgument(_)
        );
    }
    assert_err!(
        reduce::col_sum(
            g,
            &x,
            &t(&[3], DType::F32),
            Some(&t(&[1, 3], DType::F32)),
            false
        ),
        Error::InvalidArgument(_)
    );
}

// ---------------------------------------------------------------------------------------
// Layers and the MLP

fn mlp_config(widths: &[usize]) -> MlpConfig {
    MlpConfig {
        widths: widths.to_vec(),
        activation: Activation::Gelu,
        layer_norm: true,
        bias: true,
    }
}

#[test]
fn layers_and_the_mlp_refuse_bad_input() {
    let g = gpu();
    let flag = OverflowFlag::new(g).unwrap();
    let ctx = LayerCtx::new(g, Policy::new(Precision::F16), &flag);
    let one = constant_scale(g, 1.0).unwrap();
    let mut rng = SplitMix64::new(1);

    for bad in [
        "widths=64",
        "widths=64,0,10",
        "widths=a,b",
        "widths=4,2;activation=swish",
        "widths=4,2;layer_norm=maybe",
        "widths=4,2;dropout=0.1",
        "activation=gelu",
        "",
    ] {
        assert_err!(bad.parse::<MlpConfig>(), Error::InvalidArgument(_));
    }
    assert_err!(
        Mlp::new(&ctx, &mlp_config(&[8, 4, 3]), 0, 1, &one),
        Error::Empty { .. }
    );
    assert_err!(
        Mlp::new(&ctx, &mlp_config(&[8]), 2, 1, &one),
        Error::InvalidArgument(_)
    );
    // A layer far too big for any device: refused before its initial values are built
    // on the host (2^46 floats would not fit in memory).
    assert_err!(
        Mlp::new(&ctx, &mlp_config(&[64, 1 << 40, 10]), 2, 1, &one),
        Error::TooLarge { .. }
    );
    assert_err!(
        Mlp::new(&ctx, &mlp_config(&[usize::MAX, 2]), 2, 1, &one),
        Error::InvalidArgument(_)
    );

    // Layers check the nodes they are given.
    let x = Node::new(g, &[4, 6], DType::F16, false).unwrap();
    let flat = Node::new(g, &[24], DType::F16, true).unwrap();
    assert_err!(
        Linear::new(&ctx, &x, "0", 5, 3, true, &mut rng),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        Linear::new(&ctx, &x, "0", 6, 0, true, &mut rng),
        Error::Empty { .. }
    );
    assert_err!(
        Linear::new(&ctx, &flat, "0", 24, 3, true, &mut rng),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        LayerNorm::new(&ctx, &flat, "1", 1e-5),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        LayerNorm::new(&ctx, &x, "1", f32::NAN),
        Error::InvalidArgument(_)
    );
    assert_err!(
        ActivationLayer::gelu(&ctx, &Node::new(g, &[], DType::F16, true).unwrap()),
        Error::ShapeMismatch { .. }
    );
    assert_err!(
        SoftmaxCrossEntropy::new(&ctx, &flat, &one),
        Error::ShapeMismatch { .. }
    );

    // Batches: the input length and every label are checked before anything is written.
    let m = Mlp::new(&ctx, &mlp_config(&[6, 5, 3]), 4, 1, &one).unwrap();
    assert_err!(
        m.set_batch(&[0.0; 23], &[0, 1, 2, 0]),
        Error::DataLength { .. }
    );
    assert_err!(
        m.set_batch(&[0.0; 24], &[0, 1, 2]),
        Error::DataLength { .. }
    );
    assert_err!(
        m.set_batch(&[0.0; 24], &[0, 1, 3, 0]),
        Error::LabelOutOfRange {
            index: 2,
            label: 3,
            classes: 3
        }
    );
    m.set_batch(&[0.5; 24], &[0, 1, 2, 0]).unwrap();
    m.forward().unwrap();
    assert!(m.read_loss_blocking().unwrap().is_finite());
}

/// One F16 training step of `m` on `x` (forward, backward, AdamW, scale update).
fn train_step(g: &Gpu, m: &Mlp, opt: &AdamW, x: &[f32], y: &[u32]) {
    m.set_batch(x, y).unwrap();
    submit_with(
        g,
        |enc| opt.clear_flag(enc),
        |pass| {
            m.encode_forward_backward(pass);
            opt.encode_step(pass);
        },
    )
    .unwrap();
}

#[test]
fn nonfinite_input_data_skips_the_step_and_is_counted() {
    // NaN or inf in a batch is data, not an error: it reaches the loss, the scaler sees
    // non-finite gradients, the step is skipped for every parameter and counted; the
    // next clean batch trains normally.
    let g = gpu();
    let scaler = LossScaler::new(g, ScalerConfig::default()).unwrap();
    let ctx = LayerCtx::new(g, Policy::new(Precision::F16), scaler.flag());
    let m = Mlp::new(&ctx, &mlp_config(&[6, 5, 3]), 4, 1, scaler.scale_buffer()).unwrap();
    let opt = AdamW::new(g, &m.params(), AdamConfig::default(), &scaler).unwrap();
    let masters = |m: &Mlp| -> Vec<Vec<u8>> {
        m.params()
            .iter()
            .map(|p| p.master.to_bytes().unwrap())
            .collect()
    };
    let clean: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
    let labels = [0, 1, 2, 0];
    let before = masters(&m);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = clean.clone();
        x[7] = bad;
        train_step(g, &m, &opt, &x, &labels);
    }
    let s = opt.stats_blocking().unwrap();
    assert_eq!((s.skipped_steps, s.nonfinite_steps, s.steps), (3, 3, 0));
    assert_eq!(s.scale, 65536.0 / 8.0);
    assert_eq!(
        masters(&m),
        before,
        "skipped steps leave the weights bit-identical"
    );
    train_step(g, &m, &opt, &clean, &labels);
    let s = opt.stats_blocking().unwrap();
    assert_eq!((s.skipped_steps, s.steps), (3, 1));
    assert_ne!(masters(&m), before);
    for p in m.params() {
        assert!(p.master.to_f32_vec().unwrap().iter().all(|v| v.is_finite()));
    }
}

// ---------------------------------------------------------------------------------------
// Trainer

fn tiny_data(n: usize, features: usize, classes: usize) -> InMemory {
    let x: Vec<f32> = (0..n * features)
        .map(|i| ((i * 7919) % 13) as f32 / 6.0 - 1.0)
        .collect();
    let y: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
    InMemory::new(x, y, features, classes).unwrap()
}

fn tiny_config() -> TrainConfig {
    TrainConfig {
        batch: 4,
        ..TrainConfig::default()
    }
}

fn tiny_model() -> MlpOptions {
    MlpOptions {
        hidden: vec![8],
        ..MlpOptions::default()
    }
}

#[test]
fn the_trainer_refuses_bad_input_and_returns_device_lost() {
    let g = gpu();
    let data = tiny_data(12, 5, 3);
    let zero_width = MlpOptions {
        hidden: vec![8, 0],
        ..tiny_model()
    };
    for (bad, model) in [
        (
            TrainConfig {
                batch: 0,
                ..tiny_config()
            },
            tiny_model(),
        ),
        (tiny_config(), zero_width),
        (
            TrainConfig {
                input_noise: f32::NAN,
                ..tiny_config()
            },
            tiny_model(),
        ),
        (
            TrainConfig {
                lr: -1.0,
                ..tiny_config()
            },
            tiny_model(),
        ),
        (
            TrainConfig {
                batch: 13,
                ..tiny_config()
            },
            tiny_model(),
        ),
    ] {
        assert_err!(
            Trainer::new_blocking(g, bad.clone(), &model, &data),
            Error::InvalidArgument(_)
        );
    }
    let mut t = Trainer::new_blocking(g, tiny_config(), &tiny_model(), &data).unwrap();
    assert_err!(t.step(&[0.0; 19], &[0, 1, 2, 0]), Error::DataLength { .. });
    assert_err!(
        t.step(&[0.0; 20], &[0, 1, 3, 0]),
        Error::LabelOutOfRange { label: 3, .. }
    );
    let other = tiny_data(12, 6, 3);
    assert_err!(t.step_from(&other), Error::ShapeMismatch { .. });
    assert_err!(t.evaluate_blocking(&other), Error::ShapeMismatch { .. });
    assert_err!(t.predict_blocking(&[0.0; 7]), Error::DataLength { .. });
    assert_err!(t.set_lr(f32::NAN), Error::InvalidArgument(_));
    assert_eq!(t.steps(), 0, "refused steps are not counted");
    t.step_from(&data).unwrap();

    // A lost device: every call says so, and a save fails before touching the file.
    let own = Gpu::with_options_blocking(GpuOptions::from_env()).unwrap();
    let mut t = Trainer::new_blocking(&own, tiny_config(), &tiny_model(), &data).unwrap();
    t.step_from(&data).unwrap();
    let dir = std::env::temp_dir().join(format!("halfgrad-errors-trainer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.safetensors");
    t.save(&path).unwrap();
    let saved = std::fs::read(&path).unwrap();
    own.simulate_device_loss();
    assert_err!(t.step_from(&data), Error::DeviceLost(_));
    assert_err!(t.stats_blocking(), Error::DeviceLost(_));
    assert_err!(t.evaluate_blocking(&data), Error::DeviceLost(_));
    assert_err!(t.checkpoint_blocking(), Error::DeviceLost(_));
    assert_err!(t.save(&path), Error::DeviceLost(_));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        saved,
        "the last save is intact"
    );
    // And it reloads on a new device where it stopped.
    let fresh = Gpu::with_options_blocking(GpuOptions::from_env()).unwrap();
    assert_eq!(Trainer::load(&fresh, &path).unwrap().steps(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
