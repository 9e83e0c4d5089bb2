//! Device limits: a tensor or buffer past the storage-binding limit is refused with an
//! error that names the limit and the size, at the tensor, op, parameter and optimizer
//! level; everything up to the limit works. The limit is lowered artificially
//! (`GpuOptions::max_storage_binding_override`) so the tests stay small.

mod common;

use halfgrad::amp::{LossScaler, Policy, Precision, ScalerConfig};
use halfgrad::kernels::Bind;
use halfgrad::nn::Role;
use halfgrad::nn::{Activation, LayerCtx, Linear, Mlp, MlpConfig, Node, Param, SplitMix64};
use halfgrad::ops::{cast, loss_scale};
use halfgrad::optim::{AdamConfig, AdamW};
use halfgrad::train::{MemoryReport, TrainConfig, Trainer};
use halfgrad::{DType, Error, Gpu, GpuOptions, Tensor};

const LIMIT: u64 = 4096;
const LIMIT_NAME: &str = "max_storage_buffer_binding_size";

fn limited(bytes: u64) -> Gpu {
    Gpu::with_options_blocking(GpuOptions {
        max_storage_binding_override: Some(bytes),
        ..GpuOptions::from_env()
    })
    .expect("a GPU adapter (lavapipe in CI)")
}

/// The error is TooLarge for `bytes` against the binding limit, and its message says
/// both numbers and the limit's name.
fn assert_too_large<T: std::fmt::Debug>(r: halfgrad::Result<T>, bytes: u64, limit: u64) {
    match r {
        Err(e @ Error::TooLarge { .. }) => {
            let msg = e.to_string();
            eprintln!("ok  {msg}");
            let Error::TooLarge {
                bytes: b,
                limit: l,
                limit_name,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!((b, l, limit_name), (bytes, limit, LIMIT_NAME));
            for part in [bytes.to_string(), limit.to_string(), LIMIT_NAME.to_string()] {
                assert!(msg.contains(&part), "{msg:?} does not name {part}");
            }
        }
        other => panic!("expected TooLarge({bytes} > {limit}), got {other:?}"),
    }
}

#[test]
fn the_override_lowers_the_limit_and_never_raises_it() {
    let real = common::gpu().caps().max_storage_buffer_binding_size;
    assert_eq!(limited(LIMIT).caps().max_storage_buffer_binding_size, LIMIT);
    assert_eq!(
        limited(u64::MAX).caps().max_storage_buffer_binding_size,
        real
    );
}

#[test]
fn tensors_and_params_past_the_limit_are_refused_at_creation() {
    let g = limited(LIMIT);
    // Exactly at the limit: fine, and a cast over all of it is correct to the last element.
    let n = (LIMIT / 4) as usize;
    let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let x = Tensor::from_f32(&g, &[n], &values, DType::F32).unwrap();
    let y = cast::cast_to(&g, &x, DType::BF16).unwrap();
    let z = cast::cast_to(&g, &y, DType::F32).unwrap();
    let expect: Vec<f32> = values.iter().map(|&v| DType::BF16.round(v)).collect();
    assert_eq!(z.to_f32_vec().unwrap(), expect);
    // An odd f16 length that pads up to exactly the limit is fine too.
    Tensor::zeros(&g, &[(LIMIT / 2) as usize - 3], DType::F16).unwrap();

    // One element more: refused, naming the limit and the padded size.
    for dt in DType::ALL {
        let over = (LIMIT as usize / dt.size_bytes()) + 1;
        let bytes = (over * dt.size_bytes()).next_multiple_of(16) as u64;
        assert_too_large(Tensor::empty(&g, &[over], dt), bytes, LIMIT);
        assert_too_large(Tensor::zeros(&g, &[over], dt), bytes, LIMIT);
        assert_too_large(Tensor::full(&g, &[1, over], dt, 1.0), bytes, LIMIT);
        assert_too_large(
            Tensor::from_f32(&g, &[over], &vec![0.0; over], dt),
            bytes,
            LIMIT,
        );
        // A parameter (f32 master) of that many elements, whatever its compute dtype.
        let master_bytes = (over * 4).next_multiple_of(16) as u64;
        assert_too_large(
            Param::from_f32(&g, "w", &[over], &vec![0.5; over], dt),
            master_bytes,
            LIMIT,
        );
    }
    // The largest parameter that fits trains: AdamW's kernels bind it whole.
    let scaler = LossScaler::new(&g, ScalerConfig::default()).unwrap();
    let p = Param::from_f32(&g, "w", &[n], &vec![1.0; n], DType::F16).unwrap();
    let opt = AdamW::new(&g, &[&p], AdamConfig::default(), &scaler).unwrap();
    p.grad.write_f32(&vec![65536.0; n]).unwrap();
    opt.submit_step().unwrap();
    let w = p.master.to_f32_vec().unwrap();
    assert!(w.iter().all(|&v| (v - 0.999).abs() < 1e-6), "{:?}", &w[..4]);
    assert_eq!(opt.stats_blocking().unwrap().steps, 1);
    g.check().unwrap();
}

#[test]
fn ops_and_the_optimizer_refuse_raw_buffers_past_the_limit() {
    // 64 bytes: the scaler's own 64-byte state still fits, little else does.
    let g = limited(64);
    let scaler = LossScaler::new(&g, ScalerConfig::default()).unwrap();
    let grad = Tensor::zeros(&g, &[4], DType::F32).unwrap();
    let big = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("partials past the limit"),
        size: 80,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    assert_too_large(
        loss_scale::check(&g, &grad, scaler.scale_buffer(), &big, 0, scaler.flag()),
        80,
        64,
    );
    assert_too_large(
        g.dispatch(
            &loss_scale::UPDATE,
            &[Bind::Buffer(&big), Bind::Buffer(scaler.flag().buffer())],
            &[0u8; 32],
            &[],
            [1, 1, 1],
        ),
        80,
        64,
    );
    // 17 one-element parameters need 17 partial sums (80 padded bytes): AdamW says so
    // instead of building a step that could not bind them.
    let params: Vec<Param> = (0..17)
        .map(|i| Param::from_f32(&g, &format!("p{i}"), &[1], &[0.0], DType::F32).unwrap())
        .collect();
    let refs: Vec<&Param> = params.iter().collect();
    assert_too_large(
        AdamW::new(&g, &refs, AdamConfig::default(), &scaler),
        80,
        64,
    );
    // 16 fit.
    AdamW::new(&g, &refs[..16], AdamConfig::default(), &scaler).unwrap();
    g.check().unwrap();
}

#[test]
fn layers_and_models_past_the_limit_are_refused() {
    let g = limited(LIMIT);
    let scaler = LossScaler::new(&g, ScalerConfig::default()).unwrap();
    let ctx = LayerCtx::new(&g, Policy::new(Precision::F16), scaler.flag());
    let mut rng = SplitMix64::new(3);
    let x = Node::new(&g, &[4, 32], DType::F16, false).unwrap();
    // A 32 x 32 f32 master weight is exactly 4096 bytes: fine.
    Linear::new(&ctx, &x, "0", 32, 32, true, &mut rng).unwrap();
    // 33 x 32: 4224 bytes, refused before its initial values are built.
    assert_too_large(
        Linear::new(&ctx, &x, "0", 32, 33, true, &mut rng),
        4224,
        LIMIT,
    );
    let config = |widths: &[usize]| MlpConfig {
        widths: widths.to_vec(),
        activation: Activation::Relu,
        layer_norm: true,
        bias: true,
    };
    // Weight 0 of a 64-32-10 MLP: 32 x 64 x 4 = 8192 bytes.
    assert_too_large(
        Mlp::new(&ctx, &config(&[64, 32, 10]), 4, 1, scaler.scale_buffer()),
        8192,
        LIMIT,
    );
    // Activations count too: a batch of 1025 rows of 2 f16 inputs is 4100 -> 4112 bytes.
    assert_too_large(
        Mlp::new(&ctx, &config(&[2, 2]), 1025, 1, scaler.scale_buffer()),
        4112,
        LIMIT,
    );
    // A model whose every tensor fits trains.
    let m = Mlp::new(&ctx, &config(&[32, 32, 10]), 4, 1, scaler.scale_buffer()).unwrap();
    m.set_batch(&[0.25; 128], &[1, 2, 3, 4]).unwrap();
    m.forward().unwrap();
    assert!(m.read_loss_blocking().unwrap().is_finite());
}

fn mlp_config(widths: &[usize], layer_norm: bool) -> MlpConfig {
    MlpConfig {
        widths: widths.to_vec(),
        activation: Activation::Gelu,
        layer_norm,
        bias: true,
    }
}

fn train_config(precision: Precision, batch: usize) -> TrainConfig {
    TrainConfig {
        batch,
        ..TrainConfig::default().with_precision(precision)
    }
}

#[test]
fn the_size_plan_lists_every_pooled_buffer_the_trainer_creates() {
    for precision in [Precision::F32, Precision::F16, Precision::BF16] {
        for layer_norm in [false, true] {
            // A fresh device: its pool starts empty, so every tensor is a new buffer.
            let g = limited(u64::MAX);
            let mlp = mlp_config(&[5, 7, 6, 3], layer_norm);
            let config = train_config(precision, 9);
            let plan = Trainer::<Mlp>::plan(&config, &mlp).unwrap().unwrap();
            let (count, bytes) = (g.pool().created(), g.pool().created_bytes());
            let t = Trainer::<Mlp>::with_model(&g, config, &mlp, 100).unwrap();
            let pooled = plan.tensors.iter().filter(|t| t.pooled).count() as u64;
            assert_eq!(
                (g.pool().created() - count, g.pool().created_bytes() - bytes),
                (pooled, plan.pooled_bytes()),
                "{precision} layer_norm={layer_norm}"
            );
            // The measured report (unpadded tensor bytes) never exceeds the plan's
            // (padded, and with the saved row terms, log-sum-exp and labels, which the
            // graph does not list).
            let (measured, planned) = (t.memory(), MemoryReport::from_plan(&plan));
            assert!(measured.parameter_bytes() <= planned.parameter_bytes());
            assert!(measured.activation_bytes() <= planned.activation_bytes());
        }
    }
}

/// `DoesNotFit` naming `tensor`, its `bytes`, the binding limit and `largest`.
fn assert_does_not_fit<T: std::fmt::Debug>(
    r: halfgrad::Result<T>,
    tensor: &str,
    bytes: u64,
    largest: Option<usize>,
) {
    match r {
        Err(e @ Error::DoesNotFit { .. }) => {
            let msg = e.to_string();
            eprintln!("ok  {msg}");
            let Error::DoesNotFit {
                tensor: t,
                bytes: b,
                limit_name,
                limit,
                largest: l,
                ..
            } = e
            else {
                unreachable!()
            };
            assert!(t.contains(tensor), "{t}");
            assert_eq!(
                (b, limit_name, limit, l),
                (bytes, LIMIT_NAME, LIMIT, largest)
            );
            let mut parts = vec![tensor.to_string(), bytes.to_string(), LIMIT.to_string()];
            parts.push(LIMIT_NAME.to_string());
            match largest {
                Some(n) => parts.push(format!("the largest batch that fits is {n}")),
                None => parts.push("not even batch 1 fits".into()),
            }
            for part in parts {
                assert!(msg.contains(&part), "{msg:?} does not name {part}");
            }
        }
        other => panic!("expected DoesNotFit({tensor}), got {other:?}"),
    }
}

#[test]
fn a_model_or_batch_past_the_limits_is_refused_before_any_allocation() {
    let g = limited(LIMIT);
    let created = (g.pool().created(), g.pool().created_bytes());
    // A batch too large: the widest activation, (1000, 32) f16 = 64000 bytes, is named;
    // 64 rows of 32 f16 (4096 bytes) is the most that fits.
    let mlp = mlp_config(&[2, 32, 3], true);
    let config = train_config(Precision::F16, 1000);
    assert_does_not_fit(
        Trainer::<Mlp>::with_model(&g, config.clone(), &mlp, 5000),
        "`0 output` ([1000, 32] f16, activation)",
        64000,
        Some(64),
    );
    // A parameter too large: no batch helps (33 x 32 f32 master = 4224 bytes).
    let wide = mlp_config(&[32, 33, 3], false);
    assert_does_not_fit(
        Trainer::<Mlp>::with_model(&g, train_config(Precision::F32, 4), &wide, 10),
        "`0.weight` ([33, 32] f32, master weight (f32))",
        4224,
        None,
    );
    // Nothing was created: not one tensor, not the loss scaler's state.
    assert_eq!((g.pool().created(), g.pool().created_bytes()), created);
    // The batch it names fits and trains; one more row does not.
    let fits = TrainConfig {
        batch: 64,
        ..config
    };
    assert_does_not_fit(
        Trainer::<Mlp>::with_model(
            &g,
            TrainConfig {
                batch: 65,
                ..fits.clone()
            },
            &mlp,
            5000,
        ),
        "`0 output`",
        65 * 32 * 2,
        Some(64),
    );
    let mut t = Trainer::<Mlp>::with_model(&g, fits, &mlp, 5000).unwrap();
    t.step(&[0.5; 128], &[1; 64]).unwrap();
    assert!(t.stats_blocking().unwrap().loss.is_finite());
    g.check().unwrap();
}

/// Runs the built `halfgrad` binary with `HALFGRAD_MEMORY_BUDGET` set to `budget`.
fn halfgrad_with_budget(budget: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_halfgrad"))
        .args(args)
        .env("HALFGRAD_MEMORY_BUDGET", budget)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn train_memory_prints_the_plan_without_training_and_train_refuses_what_does_not_fit() {
    // The default digits run plans 622,752 bytes in f16 (68 buffers: activation
    // gradients share buffers once dead).
    let (ok, text) = halfgrad_with_budget("1G", &["train", "--memory"]);
    assert!(ok, "{text}");
    for part in [
        "planned bytes per tensor group",
        "f16 (this run) fits in 68 buffers; nothing was trained",
        "all buffers",
        "Adam moments",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    assert!(!text.contains("test loss"), "--memory trained: {text}");
    // Under a 600 KiB budget f16 does not fit; the largest batch that does is named.
    let (ok, text) = halfgrad_with_budget("600K", &["train", "--memory"]);
    assert!(ok, "{text}");
    assert!(text.contains("the largest batch that fits is 60"), "{text}");
    let (ok, text) = halfgrad_with_budget("600K", &["train", "--steps", "3"]);
    assert!(!ok, "{text}");
    for part in [
        "the total of all 68 buffers needs 622752 bytes",
        "memory budget (HALFGRAD_MEMORY_BUDGET) of 614400 bytes",
        "(batch 64); the largest batch that fits is 60",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    let (ok, text) = halfgrad_with_budget("600K", &["train", "--steps", "3", "--batch", "60"]);
    assert!(ok, "{text}");
}

#[test]
fn the_gpt_size_plan_lists_every_pooled_buffer_the_trainer_creates() {
    use halfgrad::nn::gpt::{GptConfig, GptModel};
    let gpt = GptConfig {
        vocab: 11,
        block: 7,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
    };
    for precision in [Precision::F32, Precision::F16, Precision::BF16] {
        let g = limited(u64::MAX);
        let config = TrainConfig {
            batch: 3,
            ..TrainConfig::default().with_precision(precision)
        };
        let plan = Trainer::<GptModel>::plan(&config, &gpt).unwrap().unwrap();
        let (count, bytes) = (g.pool().created(), g.pool().created_bytes());
        Trainer::<GptModel>::with_model(&g, config, &gpt, 3).unwrap();
        let pooled = plan.tensors.iter().filter(|t| t.pooled).count() as u64;
        assert_eq!(
            (g.pool().created() - count, g.pool().created_bytes() - bytes),
            (pooled, plan.pooled_bytes()),
            "{precision}"
        );
    }
}

#[test]
fn the_size_plans_list_the_partial_sums_of_tall_column_reductions() {
    use halfgrad::nn::gpt::{GptConfig, GptModel};
    use halfgrad::ops::reduce::ONE_PASS_MAX_ROWS;
    // Past ONE_PASS_MAX_ROWS rows, bias and LayerNorm gradients sum through partial sums
    // that backward shares by shape: the plans count each shared buffer once.
    let batch = ONE_PASS_MAX_ROWS + 3;
    for layer_norm in [false, true] {
        let g = limited(u64::MAX); // a fresh pool: every tensor is a new buffer
        let mlp = mlp_config(&[5, 7, 7, 3], layer_norm);
        let config = train_config(Precision::F16, batch);
        let plan = Trainer::<Mlp>::plan(&config, &mlp).unwrap().unwrap();
        let partial = plan
            .tensors
            .iter()
            .filter(|t| t.name.contains("partial sums"));
        assert_eq!(partial.count(), if layer_norm { 3 } else { 2 });
        let (count, bytes) = (g.pool().created(), g.pool().created_bytes());
        Trainer::<Mlp>::with_model(&g, config, &mlp, batch).unwrap();
        let pooled = plan.tensors.iter().filter(|t| t.pooled).count() as u64;
        assert_eq!(
            (g.pool().created() - count, g.pool().created_bytes() - bytes),
            (pooled, plan.pooled_bytes()),
            "layer_norm={layer_norm}"
        );
    }
    let gpt = GptConfig {
        vocab: 11,
        block: 7,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
    };
    let sequences = ONE_PASS_MAX_ROWS / 7 + 1; // 2051 rows of 7 tokens
    let config = TrainConfig {
        batch: sequences,
        ..TrainConfig::default().with_precision(Precision::BF16)
    };
    let plan = Trainer::<GptModel>::plan(&config, &gpt).unwrap().unwrap();
    let partial = plan
        .tensors
        .iter()
        .filter(|t| t.name.contains("partial sums"));
    assert_eq!(partial.count(), 4);
    let g = limited(u64::MAX);
    let (count, bytes) = (g.pool().created(), g.pool().created_bytes());
    Trainer::<GptModel>::with_model(&g, config, &gpt, sequences).unwrap();
    let pooled = plan.tensors.iter().filter(|t| t.pooled).count() as u64;
    assert_eq!(
        (g.pool().created() - count, g.pool().created_bytes() - bytes),
        (pooled, plan.pooled_bytes())
    );
}

#[test]
fn a_gpt_past_the_limits_is_refused_before_any_allocation_naming_the_block_size_that_fits() {
    use halfgrad::nn::gpt::GptConfig;
    use halfgrad::train::{GptTrainConfig, GptTrainer};
    let g = limited(LIMIT);
    let created = (g.pool().created(), g.pool().created_bytes());
    let run = |batch: usize, block: usize| GptTrainConfig {
        model: GptConfig {
            vocab: 11,
            block,
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
        },
        precision: Precision::F32,
        batch,
        ..GptTrainConfig::tiny(10)
    };
    // One sequence of 64 tokens already needs (1, 2, 64, 64) f32 attention scores, 32768
    // bytes: no batch helps; block 22 (2 x 22 x 22 x 4 = 3872 bytes) is the most that fits.
    let r = GptTrainer::new(&g, run(1, 64), None);
    match &r {
        Err(e @ Error::DoesNotFit { .. }) => {
            let msg = e.to_string();
            eprintln!("ok  {msg}");
            for part in [
                "attention scores",
                "[1, 2, 64, 64] f32",
                "32768",
                "4096",
                LIMIT_NAME,
                "the largest block size that fits is 22",
            ] {
                assert!(msg.contains(part), "{msg:?} lacks {part:?}");
            }
        }
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
    // A batch too large for the logits (B*T, V) of the evaluation graph: the batch is named.
    let r = GptTrainer::new(&g, run(64, 8), None);
    match &r {
        Err(
            e @ Error::DoesNotFit {
                largest: Some(b), ..
            },
        ) => {
            let msg = e.to_string();
            eprintln!("ok  {msg}");
            assert!(
                msg.contains(&format!("the largest batch that fits is {b}")),
                "{msg}"
            );
            assert!(GptTrainer::plan(&run(*b, 8)).unwrap().total() > 0);
        }
        other => panic!("expected DoesNotFit with a batch, got {other:?}"),
    }
    assert_eq!((g.pool().created(), g.pool().created_bytes()), created);
    // The sizes it names train.
    GptTrainer::new(&g, run(1, 22), None).unwrap();
    g.check().unwrap();
}

#[test]
fn the_gpt_trainer_plan_lists_every_pooled_buffer_and_evaluation_borrows_the_activations() {
    use halfgrad::nn::gpt::GptConfig;
    use halfgrad::train::{GptTrainConfig, GptTrainer};
    for precision in [Precision::F32, Precision::F16] {
        let g = limited(u64::MAX);
        let config = GptTrainConfig {
            model: GptConfig {
                vocab: 11,
                block: 7,
                n_layer: 2,
                n_head: 2,
                n_embd: 8,
            },
            precision,
            batch: 3,
            ..GptTrainConfig::tiny(10)
        };
        let plan = GptTrainer::plan(&config).unwrap();
        let (count, bytes) = (g.pool().created(), g.pool().created_bytes());
        GptTrainer::new(&g, config, None).unwrap();
        let pooled = plan.tensors.iter().filter(|t| t.pooled).count() as u64;
        assert_eq!(
            (g.pool().created() - count, g.pool().created_bytes() - bytes),
            (pooled, plan.pooled_bytes()),
            "{precision}"
        );
        // The evaluation graph's own buffers: tokens, labels, log-sum-exp and the five
        // LayerNorms' row terms; no activation.
        let eval = plan.tensors.iter().filter(|t| t.group == "eval");
        assert_eq!(eval.clone().count(), 8, "{precision}");
        assert!(eval
            .clone()
            .all(|t| t.role != Role::Activations || t.shape == [21]));
    }
}
