//! The trainer on lavapipe: the digits defaults reach 95% in every precision, a step is one
//! submission with no readback, a run resumed in a new process is bit-identical, broken
//! or mismatched checkpoints give typed errors, failed saves lose nothing.

mod common;

use common::{gpu, gpu_packed, gpus_for_f16};
use halfgrad::amp::Precision;
use halfgrad::checkpoint::{Checkpoint, TensorDType};
use halfgrad::data::{Dataset, Digits, InMemory, SplitMix64};
use halfgrad::nn::MlpOptions;
use halfgrad::train::{LrSchedule, TrainConfig, Trainer};
use halfgrad::{Error, Gpu, GpuOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("halfgrad-train-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small, fast config for the mechanics tests.
fn small(precision: Precision) -> TrainConfig {
    TrainConfig {
        precision,
        batch: 8,
        schedule: LrSchedule::WarmupCosine {
            warmup: 3,
            total: 40,
        },
        ..TrainConfig::default()
    }
}

/// The MLP of the mechanics tests: one hidden layer of 16.
fn small_model() -> MlpOptions {
    MlpOptions {
        hidden: vec![16],
        ..MlpOptions::default()
    }
}

/// Random features with a learnable label (the sign pattern of two features).
fn synthetic(n: usize, features: usize, classes: usize, seed: u64) -> InMemory {
    let mut rng = SplitMix64::new(seed);
    let mut x = Vec::with_capacity(n * features);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let row: Vec<f32> = (0..features).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let label = ((row[0] > 0.0) as usize + 2 * (row[1] > 0.0) as usize) % classes;
        x.extend_from_slice(&row);
        y.push(label as u32);
    }
    InMemory::new(x, y, features, classes).unwrap()
}

#[test]
fn digits_defaults_reach_95_percent_in_every_precision() {
    let (train, test) = Digits::load().unwrap();
    let steps = match TrainConfig::default().schedule {
        LrSchedule::WarmupCosine { total, .. } => total,
        LrSchedule::Constant => 1500,
    };
    let mut runs: Vec<(Precision, &str, &Gpu)> = vec![
        (Precision::F32, "f32", gpu()),
        (Precision::BF16, "bf16", gpu()),
    ];
    for (path, g) in gpus_for_f16() {
        runs.push((Precision::F16, path, g));
    }
    let mut accuracy = Vec::new();
    for (precision, label, g) in runs {
        let started = std::time::Instant::now();
        let config = TrainConfig::default().with_precision(precision);
        let mut t = Trainer::new_blocking(g, config, &MlpOptions::default(), &train).unwrap();
        for _ in 0..steps {
            t.step_from(&train).unwrap();
        }
        let stats = t.stats_blocking().unwrap();
        let eval = t.evaluate_blocking(&test).unwrap();
        println!(
            "{precision} ({label}, path {}): test accuracy {:.2}% loss {:.4}, train loss {:.4}, \
             scale {}, skipped {}, {:.1} s",
            t.describe_path(),
            100.0 * eval.accuracy,
            eval.loss,
            stats.loss,
            stats.loss_scale,
            stats.skipped_steps,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(stats.step, steps);
        assert!(
            eval.accuracy >= 0.95,
            "{precision} ({label}): {:.2}% < 95%",
            100.0 * eval.accuracy
        );
        accuracy.push((precision, label, eval.accuracy));
    }
    let reference = accuracy[0].2;
    for (precision, label, a) in &accuracy[1..] {
        assert!(
            (a - reference).abs() <= 0.01,
            "{precision} ({label}) {:.2}% is more than 1 point from f32's {:.2}%",
            100.0 * a,
            100.0 * reference
        );
    }
}

#[test]
fn one_step_is_one_submission_and_no_readback() {
    // Private devices: the counters of the shared ones move with the other tests.
    let private = |disable_f16| {
        Gpu::with_options_blocking(GpuOptions {
            disable_f16,
            ..GpuOptions::from_env()
        })
        .unwrap()
    };
    let (default, packed) = (private(false), private(true));
    let data = synthetic(50, 6, 3, 1);
    for (precision, g) in [
        (Precision::F32, &default),
        (Precision::F16, &packed),
        (Precision::F16, &default),
        (Precision::BF16, &default),
    ] {
        let mut t = Trainer::new_blocking(g, small(precision), &small_model(), &data).unwrap();
        t.step_from(&data).unwrap(); // warm-up: first use of every pipeline
        g.wait_idle().unwrap();
        let (subs, reads, created) = (g.submission_count(), g.readback_count(), g.pool().created());
        for _ in 0..5 {
            t.step_from(&data).unwrap();
        }
        assert_eq!(
            g.submission_count() - subs,
            5,
            "{precision}: one submission per step"
        );
        assert_eq!(
            g.readback_count(),
            reads,
            "{precision}: no readback in a step"
        );
        assert_eq!(g.pool().created(), created, "{precision}: no new buffer");
        let stats = t.stats_blocking().unwrap();
        assert_eq!(g.readback_count() - reads, 1, "stats is one readback");
        assert_eq!((stats.step, stats.optimizer_steps), (6, 6));
        assert!(stats.loss.is_finite() && stats.grad_norm.is_finite());
    }
}

#[test]
fn evaluation_and_prediction_are_batched_correctly_and_change_nothing() {
    let data = synthetic(60, 5, 3, 2);
    let test = synthetic(23, 5, 3, 3); // 23 = 2 full batches of 8 and a padded one
    let mut plain =
        Trainer::new_blocking(gpu(), small(Precision::F16), &small_model(), &data).unwrap();
    let mut probed =
        Trainer::new_blocking(gpu(), small(Precision::F16), &small_model(), &data).unwrap();
    for _ in 0..12 {
        plain.step_from(&data).unwrap();
        probed.step_from(&data).unwrap();
        probed.evaluate_blocking(&test).unwrap();
        probed.predict_blocking(&test.inputs()[..5]).unwrap();
    }
    let (a, b) = (
        plain.checkpoint_blocking().unwrap(),
        probed.checkpoint_blocking().unwrap(),
    );
    assert_eq!(a, b, "evaluation between steps changed the training");
    assert_eq!(
        plain.stats_blocking().unwrap(),
        probed.stats_blocking().unwrap(),
        "evaluation clobbered the step loss"
    );

    // Rows are independent: predicting all at once (chunks + padding) equals one by one.
    let all = plain.predict_blocking(test.inputs()).unwrap();
    let one_by_one: Vec<u32> = test
        .inputs()
        .chunks(5)
        .map(|row| plain.predict_blocking(row).unwrap()[0])
        .collect();
    assert_eq!(all, one_by_one);
    let eval = plain.evaluate_blocking(&test).unwrap();
    let correct = all
        .iter()
        .zip(test.labels())
        .filter(|(p, l)| p == l)
        .count();
    assert_eq!((eval.correct, eval.total), (correct, 23));
    assert!((eval.accuracy - correct as f32 / 23.0).abs() < 1e-6);
    assert!(eval.loss.is_finite() && eval.loss > 0.0);
    // The mean loss over 23 padded rows equals the model's own mean over the same rows
    // (sum of two full batches' means and the third's per-example losses).
    let model = plain.model();
    let mut total = 0.0f64;
    for rows in [0..8, 8..16] {
        let x = &test.inputs()[rows.start * 5..rows.end * 5];
        model.set_batch(x, &test.labels()[rows]).unwrap();
        model.forward().unwrap();
        total += 8.0 * f64::from(model.read_loss_blocking().unwrap());
    }
    let mut x = test.inputs()[16 * 5..].to_vec();
    x.resize(8 * 5, 0.0);
    let mut y = test.labels()[16..].to_vec();
    y.resize(8, 0);
    model.set_batch(&x, &y).unwrap();
    model.forward().unwrap();
    let last = model.loss_layer().losses().to_f32_vec().unwrap();
    total += last[..7].iter().map(|&l| f64::from(l)).sum::<f64>();
    let mean = total / 23.0;
    assert!(
        (f64::from(eval.loss) - mean).abs() <= 1e-5 * mean,
        "evaluate {} vs model {mean}",
        eval.loss
    );

    // Typed errors for data of the wrong shape.
    let other = synthetic(10, 4, 3, 4);
    assert!(matches!(
        plain.evaluate_blocking(&other),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        plain.predict_blocking(&[0.0; 7]),
        Err(Error::DataLength { .. })
    ));
    assert!(matches!(
        plain.step_from(&other),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        plain.step(&[0.0; 40], &[9; 8]),
        Err(Error::LabelOutOfRange { .. })
    ));
}

#[test]
fn precision_paths_and_memory_report() {
    let data = synthetic(20, 6, 3, 5);
    let build = |p, g: &Gpu| Trainer::new_blocking(g, small(p), &small_model(), &data).unwrap();
    assert_eq!(build(Precision::F32, gpu()).describe_path(), "f32");
    assert_eq!(build(Precision::BF16, gpu()).describe_path(), "bf16");
    assert_eq!(
        build(Precision::F16, gpu_packed()).describe_path(),
        "f16 packed"
    );
    let native = build(Precision::F16, gpu()).describe_path();
    assert!(
        native == "f16 native" || native == "f16 cooperative matrix" || !gpu().caps().shader_f16
    );
    let f16 = build(Precision::F16, gpu());
    assert!(f16
        .policy()
        .to_string()
        .starts_with("f16: matmul f16xf16->f32"));

    let m32 = build(Precision::F32, gpu()).memory();
    let m16 = f16.memory();
    let n = f16.num_params();
    for m in [&m32, &m16] {
        assert_eq!(m.master_weights, 4 * n);
        assert_eq!(m.grads, 4 * n);
        assert_eq!(m.moments, 8 * n);
    }
    assert_eq!(m32.low_copies, 0);
    // Only matrices have a 16-bit copy (biases and LayerNorm parameters are read in f32).
    let matrices: usize = f16
        .model()
        .params()
        .iter()
        .filter(|p| p.shape().len() == 2)
        .map(|p| p.len())
        .sum();
    assert_eq!(m16.low_copies, 2 * matrices);
    assert_eq!(2 * m16.activation_grads, m32.activation_grads);
    assert!(m16.activations < m32.activations);
    assert!(m16.per_param(m16.parameter_bytes()) <= 18.0);
    let table = halfgrad::train::MemoryReport::table(&[m32, m16]);
    assert!(table.contains("16 B/param") && table.contains("2 + 4 + 4 + 8 = 18"));
}

/// Tensors (names, shapes, dtypes, bits) and the run position of two checkpoints.
fn assert_same_state(a: &Checkpoint, b: &Checkpoint, what: &str) {
    assert_eq!(a.tensors.len(), b.tensors.len(), "{what}: tensor count");
    for (x, y) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(
            (&x.name, &x.shape, x.dtype),
            (&y.name, &y.shape, y.dtype),
            "{what}"
        );
        if x.data != y.data {
            let (vx, vy) = (x.data.chunks(4), y.data.chunks(4));
            let first = vx.zip(vy).position(|(p, q)| p != q).unwrap_or(0);
            panic!(
                "{what}: tensor `{}` differs first at element {first}",
                x.name
            );
        }
    }
    for key in ["train.step", "train.batcher"] {
        assert_eq!(a.meta(key).unwrap(), b.meta(key).unwrap(), "{what}: {key}");
    }
}

/// Runs the built `halfgrad` binary.
fn halfgrad(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_halfgrad"))
        .args(args)
        .output()
        .unwrap();
    out
}

fn ok(args: &[&str]) {
    let out = halfgrad(args);
    assert!(
        out.status.success(),
        "halfgrad {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn resume_in_a_new_process_is_bit_exact() {
    let dir = TempDir::new("resume");
    for precision in ["f32", "f16"] {
        let full = dir.path(&format!("{precision}-full.safetensors"));
        let half = dir.path(&format!("{precision}-half.safetensors"));
        let resumed = dir.path(&format!("{precision}-resumed.safetensors"));
        let p = |path: &Path| path.display().to_string();
        let common = [
            "train",
            "--precision",
            precision,
            "--hidden",
            "32,32",
            "--seed",
            "7",
            "--steps",
            "40",
            "--eval-every",
            "15",
            "--json",
        ];
        ok(&[&common[..], &["--checkpoint", &p(&full)]].concat());
        ok(&[
            &common[..],
            &["--stop-after", "20", "--checkpoint", &p(&half)],
        ]
        .concat());
        ok(&[
            &common[..],
            &["--resume", &p(&half), "--checkpoint", &p(&resumed)],
        ]
        .concat());

        let half = Checkpoint::load(&half).unwrap();
        assert_eq!(half.meta("train.step").unwrap(), "20");
        let (full, resumed) = (
            Checkpoint::load(&full).unwrap(),
            Checkpoint::load(&resumed).unwrap(),
        );
        assert_eq!(full.meta("train.step").unwrap(), "40");
        assert_same_state(&full, &resumed, precision);
        // U32 state is stored as U32, and weights under PyTorch state-dict names.
        assert_eq!(full.tensor("optim.step").unwrap().dtype, TensorDType::U32);
        assert_eq!(full.get_u32("optim.step", &[1]).unwrap(), [40]);
        assert!(full.get_f32("0.weight", &[32, 64]).is_ok());
        assert!(full.get_f32("1.weight", &[32]).is_ok(), "LayerNorm weight");
        assert!(full.get_f32("6.bias", &[10]).is_ok());
        assert!(full
            .meta("pytorch")
            .unwrap()
            .starts_with("nn.Sequential(nn.Linear(64, 32)"));
        println!("{precision}: 40 steps == 20 + save + new process + 20, bit for bit");
    }
}

#[test]
fn broken_or_mismatched_checkpoints_are_typed_errors() {
    let dir = TempDir::new("broken");
    let data = synthetic(40, 6, 3, 6);
    let mut t = Trainer::new_blocking(gpu(), small(Precision::F16), &small_model(), &data).unwrap();
    for _ in 0..3 {
        t.step_from(&data).unwrap();
    }
    let path = dir.path("good.safetensors");
    t.save(&path).unwrap();
    let back = Trainer::load(gpu(), &path).unwrap();
    assert_eq!(back.steps(), 3);
    assert_eq!(back.config(), t.config());
    assert_eq!(back.mlp_options().unwrap(), small_model());
    let bytes = std::fs::read(&path).unwrap();

    let is_ck = |r: &Result<Trainer, Error>| matches!(r, Err(Error::Checkpoint { .. }));
    // Truncated anywhere, or one flipped bit in the data: refused on load.
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let p = dir.path("cut.safetensors");
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let r = Trainer::load(gpu(), &p);
        assert!(is_ck(&r), "truncated at {cut}: {r:?}");
    }
    let mut flipped = bytes.clone();
    let at = bytes.len() - 100;
    flipped[at] ^= 0x10;
    let p = dir.path("flipped.safetensors");
    std::fs::write(&p, &flipped).unwrap();
    let r = Trainer::load(gpu(), &p);
    assert!(is_ck(&r), "corrupted: {r:?}");

    // Structurally valid checkpoints that do not fit: a missing tensor, a wrong shape,
    // a wrong dtype, an unknown format.
    let good = Checkpoint::from_bytes(&bytes, "good").unwrap();
    let mut missing = good.clone();
    missing
        .tensors
        .retain(|t| t.name != "optim.0.weight.exp_avg");
    let mut reshaped = good.clone();
    reshaped.tensors[0].shape = vec![6, 16];
    let mut retyped = good.clone();
    let i = retyped
        .tensors
        .iter()
        .position(|t| t.name == "optim.step")
        .unwrap();
    retyped.tensors[i].dtype = TensorDType::F32;
    let mut alien = good.clone();
    alien.set_meta("format", "something else");
    let mut extra = good.clone();
    extra.push_f32("surprise", &[1], &[1.0]).unwrap();
    for (what, ck) in [
        ("missing", missing),
        ("reshaped", reshaped),
        ("retyped", retyped),
        ("alien", alien),
        ("extra", extra),
    ] {
        let r = Trainer::from_checkpoint_blocking(gpu(), &ck);
        assert!(is_ck(&r), "{what}: {r:?}");
    }

    // Resuming with other widths: the library check and the command line.
    let requested = MlpOptions {
        hidden: vec![8],
        ..small_model()
    };
    match back.mlp_options().unwrap().ensure_same(&requested, "good") {
        Err(Error::Checkpoint { message, .. }) => {
            assert!(message.contains("hidden widths"), "{message}")
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    let cli = dir.path("cli.safetensors");
    let cli_s = cli.display().to_string();
    ok(&[
        "train",
        "--hidden",
        "16",
        "--steps",
        "2",
        "--eval-every",
        "0",
        "--json",
        "--checkpoint",
        &cli_s,
    ]);
    let out = halfgrad(&[
        "train", "--hidden", "32", "--steps", "4", "--resume", &cli_s,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("hidden widths mismatch") && stderr.contains("16") && stderr.contains("32"),
        "{stderr}"
    );
}

#[test]
fn a_failed_save_leaves_the_previous_checkpoint_intact() {
    let dir = TempDir::new("failed-save");
    let data = synthetic(40, 6, 3, 7);
    let mut t =
        Trainer::new_blocking(gpu(), small(Precision::BF16), &small_model(), &data).unwrap();
    t.step_from(&data).unwrap();
    let path = dir.path("run.safetensors");
    t.save(&path).unwrap();
    let saved = std::fs::read(&path).unwrap();
    for _ in 0..2 {
        t.step_from(&data).unwrap();
    }
    let newer = t.checkpoint_blocking().unwrap();
    let r = newer.save_failing_after(&path, 64);
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    assert_eq!(std::fs::read(&path).unwrap(), saved, "the old file changed");
    assert_eq!(Trainer::load(gpu(), &path).unwrap().steps(), 1);
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temporary files left behind: {names:?}");
}

#[test]
fn any_dataset_trains() {
    let train = synthetic(200, 7, 4, 8);
    let test = synthetic(61, 7, 4, 9);
    let config = TrainConfig {
        precision: Precision::F16,
        batch: 16,
        input_noise: 0.0,
        schedule: LrSchedule::Constant,
        ..TrainConfig::default()
    };
    let model = MlpOptions {
        hidden: vec![32],
        ..MlpOptions::default()
    };
    let mut t = Trainer::new_blocking(gpu_packed(), config, &model, &train).unwrap();
    let before = t.evaluate_blocking(&test).unwrap();
    for _ in 0..150 {
        t.step_from(&train).unwrap();
    }
    let after = t.evaluate_blocking(&test).unwrap();
    println!("synthetic: {before:?} -> {after:?}");
    assert!(
        after.loss < 0.5 * before.loss && after.accuracy > 0.85,
        "{after:?}"
    );
    assert_eq!(t.batcher_state().position, 150 * 16);
    assert_eq!(train.features(), t.features());
}
