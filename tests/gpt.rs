//! The whole GPT on the GPU (tiny sizes for lavapipe): loss and logits vs an f64
//! reference in every precision, gradients vs finite differences of that reference, the
//! tied embedding's gradient as the sum of both uses.

mod common;
#[path = "common/gpt_reference.rs"]
mod gpt_reference;

use common::{gpu, gpus_for_f16, rel_err};
use halfgrad::amp::{constant_scale, OverflowFlag, Policy, Precision};
use halfgrad::nn::gpt::{upload_params, GptConfig, GptGraph, GptWeights, Init};
use halfgrad::nn::{LayerCtx, ParamStore};
use halfgrad::{Gpu, Result};

const CONFIG: GptConfig = GptConfig {
    vocab: 11,
    block: 7,
    n_layer: 2,
    n_head: 2,
    n_embd: 8,
};
const BATCH: usize = 2;

/// GPT-2's init made larger (std 0.3 for weights, LayerNorm gains around 1, small random
/// biases), so the logits are far from uniform and every term of the model matters.
fn weights(config: &GptConfig, seed: u64) -> GptWeights {
    let init = GptWeights::init(config, seed).unwrap();
    let mut r = common::rng(seed);
    let values = init
        .iter()
        .map(|(spec, v)| match spec.init {
            Init::Normal(_) => v.iter().map(|x| x * 15.0).collect(),
            Init::Ones => common::random_vec(&mut r, v.len(), 0.3)
                .iter()
                .map(|x| 1.0 + x)
                .collect(),
            Init::Zeros => common::random_vec(&mut r, v.len(), 0.1),
        })
        .collect();
    GptWeights::from_values(config, values).unwrap()
}

fn batch(config: &GptConfig, t: usize, seed: u32) -> (Vec<u32>, Vec<u32>) {
    let v = config.vocab as u32;
    // Token 3 repeats (the embedding backward sums repeated rows); tokens 9, 10 unused.
    let tokens: Vec<u32> = (0..(BATCH * t) as u32)
        .map(|i| {
            if i % 3 == 0 {
                3
            } else {
                (i * 7 + seed) % (v - 2)
            }
        })
        .collect();
    let targets: Vec<u32> = (0..(BATCH * t) as u32)
        .map(|i| (i * 5 + 1 + seed) % v)
        .collect();
    (tokens, targets)
}

struct Model {
    store: ParamStore,
    graph: GptGraph,
    _flag: OverflowFlag,
}

fn build(
    gpu: &Gpu,
    precision: Precision,
    w: &GptWeights,
    t: usize,
    backward: bool,
) -> Result<Model> {
    let flag = OverflowFlag::new(gpu)?;
    let ctx = LayerCtx::new(gpu, Policy::new(precision), &flag);
    let store = upload_params(&ctx, w)?;
    let scale = constant_scale(gpu, 1.0)?;
    let graph = GptGraph::new(&ctx, w.config(), &store, (BATCH, t), &scale, backward)?;
    Ok(Model {
        store,
        graph,
        _flag: flag,
    })
}

fn run(gpu: &Gpu, m: &Model, backward: bool) {
    let mut enc = gpu.encoder("test gpt");
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        if backward {
            m.graph.encode_forward_backward(&mut pass);
        } else {
            m.graph.encode_forward(&mut pass);
        }
    }
    gpu.submit(enc.finish()).unwrap();
}

#[test]
fn loss_and_logits_match_the_f64_reference_in_every_precision() {
    let w = weights(&CONFIG, 1);
    for t in [7, 4] {
        let (tokens, targets) = batch(&CONFIG, t, 0);
        let reference = gpt_reference::forward(&w, &tokens, &targets, BATCH, t);
        let mut runs: Vec<(String, &Gpu, Precision, f64, f64)> = vec![
            ("f32".into(), gpu(), Precision::F32, 2e-5, 1e-5),
            ("bf16".into(), gpu(), Precision::BF16, 3e-2, 1e-2),
        ];
        for (path, g) in gpus_for_f16() {
            runs.push((format!("f16 {path}"), g, Precision::F16, 4e-3, 2e-3));
        }
        for (name, g, precision, logit_tol, loss_tol) in runs {
            let m = build(g, precision, &w, t, false).unwrap();
            m.graph.set_batch(&tokens, &targets).unwrap();
            run(g, &m, false);
            let logits = m.graph.logits().to_f32_vec().unwrap();
            let loss = m.graph.loss().to_f32_vec().unwrap()[0] as f64;
            let e = rel_err(&logits, &reference.logits);
            let le = (loss - reference.loss).abs() / reference.loss;
            println!(
                "{name} T={t}: logits rel err {e:.2e}, loss {loss:.6} vs {:.6} ({le:.2e})",
                reference.loss
            );
            assert!(e < logit_tol, "{name}: logits rel err {e}");
            assert!(le < loss_tol, "{name}: loss rel err {le}");
        }
    }
}

#[test]
fn gradients_match_finite_differences_and_the_tied_weight_sums_both_uses() {
    let g = gpu();
    let w = weights(&CONFIG, 2);
    let t = CONFIG.block;
    let (tokens, targets) = batch(&CONFIG, t, 1);
    let m = build(g, Precision::F32, &w, t, true).unwrap();
    // Poison every gradient: the first writer must overwrite.
    for p in m.store.params() {
        p.grad.write_f32(&vec![f32::NAN; p.len()]).unwrap();
    }
    m.graph.set_batch(&tokens, &targets).unwrap();
    run(g, &m, true);
    let p64 = gpt_reference::params_f64(&w);
    let mut gpu_vals = Vec::new();
    let mut fd_vals = Vec::new();
    for (i, (spec, param)) in w.specs().iter().zip(m.store.params()).enumerate() {
        assert_eq!(spec.name, param.name);
        let grad = param.grad.to_f32_vec().unwrap();
        assert!(
            grad.iter().all(|x| x.is_finite()),
            "{}: non-finite gradient",
            spec.name
        );
        // A few elements of every tensor; every row of the tied embedding.
        let picks: Vec<usize> = if spec.name == "transformer.wte.weight" {
            (0..CONFIG.vocab)
                .map(|r| r * CONFIG.n_embd + r % CONFIG.n_embd)
                .collect()
        } else {
            let n = grad.len();
            vec![0, n / 2, n - 1]
        };
        for j in picks {
            let fd = gpt_reference::finite_difference(
                &CONFIG, &p64, i, j, 1e-4, &tokens, &targets, BATCH, t,
            );
            gpu_vals.push(grad[j]);
            fd_vals.push(fd);
            let tol = 1e-4 + 2e-3 * fd.abs();
            assert!(
                (grad[j] as f64 - fd).abs() < tol,
                "{}[{j}]: gpu {} vs finite difference {fd}",
                spec.name,
                grad[j]
            );
        }
    }
    let e = rel_err(&gpu_vals, &fd_vals);
    println!(
        "gradients vs finite differences: rel err {e:.2e} over {} elements",
        fd_vals.len()
    );
    assert!(e < 1e-3);
}

// ---- the trainer and the command line ----

use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::text::{Split, TextData, KJV};
use halfgrad::nn::gpt::hf;
use halfgrad::train::{GptTrainConfig, GptTrainer, LrSchedule};
use std::path::PathBuf;
use std::process::Command;

/// A small GPT that trains in seconds on lavapipe.
const SMALL: GptConfig = GptConfig {
    vocab: 256,
    block: 16,
    n_layer: 1,
    n_head: 2,
    n_embd: 16,
};

fn small_run(precision: Precision, steps: u64) -> GptTrainConfig {
    GptTrainConfig {
        model: SMALL,
        precision,
        batch: 4,
        schedule: LrSchedule::WarmupCosine {
            warmup: 2,
            total: steps,
        },
        eval_windows: 8,
        ..GptTrainConfig::tiny(steps)
    }
}

fn text() -> TextData {
    TextData::from_bytes("kjv head", &KJV[..6000], SMALL.block).unwrap()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("halfgrad-gpt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_step_is_one_submission_with_no_readback_or_allocation() {
    // A device of its own: the other tests of this binary submit concurrently.
    let own = Gpu::new_blocking().unwrap();
    let g = &own;
    let data = text();
    let mut t = GptTrainer::new(g, small_run(Precision::F16, 10), None).unwrap();
    t.step(&data).unwrap(); // warm: the first lr write
    g.wait_idle().unwrap();
    let (subs, reads, created) = (g.submission_count(), g.readback_count(), g.pool().created());
    for _ in 0..3 {
        t.step(&data).unwrap();
    }
    assert_eq!(g.submission_count() - subs, 3, "one submission per step");
    assert_eq!(g.readback_count(), reads, "no readback in a step");
    assert_eq!(g.pool().created(), created, "no buffer created by a step");
    let stats = t.stats_blocking().unwrap();
    assert_eq!(stats.step, 4);
    assert!(stats.loss.is_finite());
}

#[test]
fn every_precision_learns_and_they_agree() {
    let data = text();
    let steps = 25;
    let mut runs: Vec<(String, &Gpu, Precision)> = vec![
        ("f32".into(), gpu(), Precision::F32),
        ("bf16".into(), gpu(), Precision::BF16),
    ];
    for (path, g) in gpus_for_f16() {
        runs.push((format!("f16 {path}"), g, Precision::F16));
    }
    let mut losses = Vec::new();
    for (name, g, precision) in runs {
        let mut t = GptTrainer::new(g, small_run(precision, steps), None).unwrap();
        let before = t.evaluate_blocking(&data, Split::Validation).unwrap().loss;
        for _ in 0..steps {
            t.step(&data).unwrap();
        }
        let stats = t.stats_blocking().unwrap();
        let after = t.evaluate_blocking(&data, Split::Validation).unwrap().loss;
        println!(
            "{name}: val loss {before:.4} -> {after:.4}, skipped {}",
            stats.skipped_steps
        );
        assert!(
            after < before - 0.5,
            "{name} did not learn: {before} -> {after}"
        );
        assert_eq!(stats.skipped_steps, 0, "{name}");
        losses.push((name, after));
    }
    let f32_loss = losses[0].1;
    for (name, l) in &losses[1..] {
        let rel = (l - f32_loss).abs() / f32_loss;
        assert!(
            rel < 0.02,
            "{name}: val loss {l} vs f32 {f32_loss} ({rel:.3})"
        );
    }
}

#[test]
fn export_then_init_gives_identical_logits_and_sampling_is_seeded() {
    let g = gpu();
    let data = text();
    let mut t = GptTrainer::new(g, small_run(Precision::F32, 10), None).unwrap();
    for _ in 0..3 {
        t.step(&data).unwrap();
    }
    let w = t.weights_blocking().unwrap();
    let dir = TempDir::new("export");
    hf::save(&dir.0, &w).unwrap();
    let back = hf::load(&dir.0).unwrap();
    assert_eq!(back, w);
    let mut t2 = GptTrainer::new(g, small_run(Precision::F32, 10), Some(&back)).unwrap();
    let logits = |m: &Model| {
        m.graph
            .set_batch(&[65; BATCH * SMALL.block], &[66; BATCH * SMALL.block])
            .unwrap();
        run(g, m, false);
        m.graph.logits().to_f32_vec().unwrap()
    };
    let a = logits(&build(g, Precision::F32, &w, SMALL.block, false).unwrap());
    let b = logits(
        &build(
            g,
            Precision::F32,
            &t2.weights_blocking().unwrap(),
            SMALL.block,
            false,
        )
        .unwrap(),
    );
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(
        t.evaluate_blocking(&data, Split::Validation).unwrap(),
        t2.evaluate_blocking(&data, Split::Validation).unwrap()
    );
    let how = halfgrad::nn::gpt::SampleConfig::default();
    let s1 = t.sample_blocking(b"And ", 12, &how, 7).unwrap();
    let s2 = t2.sample_blocking(b"And ", 12, &how, 7).unwrap();
    assert_eq!(s1, s2, "same weights, same seed: same text");
    assert_eq!(s1.len(), 12);
}

fn halfgrad(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_halfgrad"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = halfgrad(args);
    assert!(
        out.status.success(),
        "halfgrad {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str], words: &str) {
    let out = halfgrad(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "halfgrad {args:?} should fail");
    assert!(
        err.contains(words),
        "halfgrad {args:?}: `{err}` should say `{words}`"
    );
    println!(
        "{}",
        err.lines()
            .rev()
            .find(|l| l.starts_with("error"))
            .unwrap_or("")
    );
}

const SMALL_ARGS: [&str; 16] = [
    "--layers",
    "1",
    "--heads",
    "2",
    "--embd",
    "16",
    "--block",
    "16",
    "--batch",
    "4",
    "--eval-windows",
    "4",
    "--sample-tokens",
    "0",
    "--eval-every",
    "0",
];

#[test]
fn the_command_line_resumes_bit_exactly_exports_and_refuses_bad_input() {
    let dir = TempDir::new("cli");
    let data = dir.path("text.txt");
    std::fs::write(&data, &KJV[..6000]).unwrap();
    let data = data.to_str().unwrap();
    let (a, b) = (dir.path("a.safetensors"), dir.path("b.safetensors"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let train = |extra: &[&str]| {
        let mut args = vec![
            "gpt",
            "train",
            "--data",
            data,
            "--steps",
            "6",
            "--precision",
            "f16",
        ];
        args.extend_from_slice(&SMALL_ARGS);
        args.extend_from_slice(extra);
        ok(&args)
    };
    // Six steps in one process; three, then three more in a second process.
    let json = train(&["--checkpoint", a, "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    for key in [
        "precision",
        "path",
        "steps",
        "train_loss",
        "val_loss",
        "tokens_per_s",
        "skipped_steps",
        "loss_scale",
        "parameters",
        "seconds",
        "adapter",
        "memory",
    ] {
        assert!(v.get(key).is_some(), "--json lacks `{key}`: {json}");
    }
    train(&["--checkpoint", b, "--stop-after", "3"]);
    train(&["--checkpoint", b, "--resume", b]);
    let (ca, cb) = (
        Checkpoint::load(a.as_ref()).unwrap(),
        Checkpoint::load(b.as_ref()).unwrap(),
    );
    assert_eq!(ca.tensors.len(), cb.tensors.len());
    for (x, y) in ca.tensors.iter().zip(&cb.tensors) {
        assert_eq!(x, y, "tensor `{}` differs after a resume", x.name);
    }
    assert_eq!(ca.metadata.get("train.step").map(String::as_str), Some("6"));

    // eval, sample and export read the checkpoint.
    let e: serde_json::Value = serde_json::from_str(
        ok(&["gpt", "eval", "--checkpoint", a, "--text", data, "--json"]).trim(),
    )
    .unwrap();
    assert_eq!(e["windows"], (6000 - 1) / 16);
    assert!(e["val_loss"].as_f64().unwrap() < 5.5);
    let s1 = ok(&[
        "gpt",
        "sample",
        "--checkpoint",
        a,
        "--tokens",
        "20",
        "--seed",
        "3",
    ]);
    assert_eq!(
        s1,
        ok(&[
            "gpt",
            "sample",
            "--checkpoint",
            a,
            "--tokens",
            "20",
            "--seed",
            "3"
        ])
    );
    let hf_dir = dir.path("hf");
    let hf_dir = hf_dir.to_str().unwrap();
    ok(&["gpt", "export", "--checkpoint", a, "--out", hf_dir]);
    // Fine-tuning from the export starts from the same weights.
    let c = dir.path("c.safetensors");
    let c = c.to_str().unwrap();
    let mut args = vec![
        "gpt",
        "train",
        "--data",
        data,
        "--steps",
        "2",
        "--init",
        hf_dir,
        "--checkpoint",
        c,
    ];
    args.extend_from_slice(&SMALL_ARGS[8..]);
    ok(&args);

    // Bad input: typed errors, nothing overwritten.
    let before = std::fs::read(a).unwrap();
    let empty = dir.path("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let short = dir.path("short.txt");
    std::fs::write(&short, &KJV[..100]).unwrap();
    let bad = |extra: &[&str], words: &str| {
        let mut args = vec!["gpt", "train", "--steps", "2", "--checkpoint", a];
        args.extend_from_slice(&SMALL_ARGS);
        args.extend_from_slice(extra);
        fails(&args, words);
    };
    bad(&["--data", empty.to_str().unwrap()], "empty");
    bad(&["--data", short.to_str().unwrap()], "too short");
    bad(
        &["--data", "/nonexistent/text.txt"],
        "/nonexistent/text.txt",
    );
    fails(
        &[
            "gpt", "train", "--data", data, "--heads", "3", "--steps", "2",
        ],
        "do not divide",
    );
    bad(
        &["--data", data, "--init", "/nonexistent/dir"],
        "/nonexistent/dir",
    );
    fails(
        &[
            "gpt", "train", "--data", data, "--init", hf_dir, "--block", "32", "--steps", "2",
        ],
        "block 32",
    );
    fails(
        &[
            "gpt", "train", "--data", data, "--resume", a, "--heads", "1", "--steps", "6",
        ],
        "heads mismatch",
    );
    let tiny = dir.path("tiny.txt");
    std::fs::write(&tiny, &KJV[..16]).unwrap();
    fails(
        &[
            "gpt",
            "eval",
            "--checkpoint",
            a,
            "--text",
            tiny.to_str().unwrap(),
        ],
        "shorter than",
    );
    std::fs::remove_file(format!("{hf_dir}/model.safetensors")).unwrap();
    fails(
        &[
            "gpt", "train", "--data", data, "--init", hf_dir, "--steps", "2",
        ],
        "model.safetensors",
    );
    assert_eq!(
        std::fs::read(a).unwrap(),
        before,
        "a failed run overwrote the checkpoint"
    );
}

#[test]
fn a_model_past_the_binding_limit_is_refused_naming_the_tensor() {
    let limited = Gpu::with_options_blocking(halfgrad::GpuOptions {
        max_storage_binding_override: Some(1 << 20),
        ..halfgrad::GpuOptions::from_env()
    })
    .unwrap();
    let config = GptTrainConfig {
        model: GptConfig {
            vocab: 4096,
            block: 16,
            n_layer: 1,
            n_head: 2,
            n_embd: 128,
        },
        ..small_run(Precision::F16, 10)
    };
    match GptTrainer::new(&limited, config, None) {
        // Refused by the size plan before any allocation (issue 16: `DoesNotFit`).
        Err(halfgrad::Error::DoesNotFit {
            tensor, limit_name, ..
        }) => {
            assert!(tensor.contains("transformer.wte.weight"), "{tensor}");
            assert!(
                limit_name.contains("max_storage_buffer_binding_size"),
                "{limit_name}"
            );
        }
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
    // Attention scores of a long context: (batch, heads, block, block) f32.
    let config = GptTrainConfig {
        model: GptConfig {
            block: 512,
            ..SMALL
        },
        batch: 2,
        ..small_run(Precision::F16, 10)
    };
    match GptTrainer::new(&limited, config, None) {
        Err(halfgrad::Error::DoesNotFit { tensor, .. }) => {
            assert!(tensor.contains("attention scores"), "{tensor}")
        }
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
}

#[test]
fn the_tiny_preset_shapes_match_the_reference_in_every_precision() {
    // Multi-tile products, 4 heads of 16, T = 64: the default model's shapes.
    let config = GptConfig {
        vocab: 256,
        ..GptConfig::tiny()
    };
    let w = weights(&config, 3);
    let t = config.block;
    let tokens: Vec<u32> = (0..(BATCH * t) as u32)
        .map(|i| (i * 37 + 11) % 256)
        .collect();
    let targets: Vec<u32> = (0..(BATCH * t) as u32)
        .map(|i| (i * 53 + 7) % 256)
        .collect();
    let reference = gpt_reference::forward(&w, &tokens, &targets, BATCH, t);
    for (name, g, precision, tol) in [
        ("f32", gpu(), Precision::F32, 1e-5),
        ("bf16", gpu(), Precision::BF16, 3e-2),
        ("f16", gpu(), Precision::F16, 5e-3),
    ] {
        let m = build(g, precision, &w, t, false).unwrap();
        m.graph.set_batch(&tokens, &targets).unwrap();
        run(g, &m, false);
        let logits = m.graph.logits().to_f32_vec().unwrap();
        let e = rel_err(&logits, &reference.logits);
        println!("{name}: tiny logits rel err {e:.2e}");
        assert!(e < tol, "{name}: {e}");
    }
}

#[test]
fn tiny_preset_gradients_agree_across_precisions() {
    let config = GptConfig::tiny();
    let w = weights(&config, 4);
    let t = config.block;
    let tokens: Vec<u32> = (0..(BATCH * t) as u32)
        .map(|i| (i * 37 + 11) % 256)
        .collect();
    let targets: Vec<u32> = (0..(BATCH * t) as u32)
        .map(|i| (i * 53 + 7) % 256)
        .collect();
    let grads = |precision| {
        let m = build(gpu(), precision, &w, t, true).unwrap();
        m.graph.set_batch(&tokens, &targets).unwrap();
        run(gpu(), &m, true);
        m.store
            .params()
            .iter()
            .map(|p| (p.name.clone(), p.grad.to_f32_vec().unwrap()))
            .collect::<Vec<_>>()
    };
    let reference = grads(Precision::F32);
    for (precision, tol) in [(Precision::F16, 2e-2), (Precision::BF16, 1e-1)] {
        for ((name, g), (_, r)) in grads(precision).iter().zip(&reference) {
            let r64: Vec<f64> = r.iter().map(|&x| x as f64).collect();
            let e = rel_err(g, &r64);
            if e > tol / 4.0 {
                println!("{precision}: {name} gradient rel err {e:.2e}");
            }
            assert!(e < tol, "{precision}: {name} gradient rel err {e}");
        }
    }
}

#[test]
fn an_evaluation_graph_borrowing_the_training_activations_changes_no_result() {
    let w = weights(&CONFIG, 4);
    let t = CONFIG.block;
    let (tokens_a, targets_a) = batch(&CONFIG, t, 0);
    let (tokens_b, targets_b) = batch(&CONFIG, t, 5);
    for precision in [Precision::F32, Precision::F16] {
        let g = gpu();
        let train = build(g, precision, &w, t, true).unwrap();
        let own = build(g, precision, &w, t, false).unwrap();
        let flag = OverflowFlag::new(g).unwrap();
        let ctx = LayerCtx::new(g, Policy::new(precision), &flag);
        let scale = constant_scale(g, 1.0).unwrap();
        let eval = GptGraph::borrowing(&ctx, &train.store, &scale, &train.graph).unwrap();
        // Every op output and saved buffer of the evaluation graph is the training graph's.
        let lent: Vec<_> = train
            .graph
            .graph()
            .forward_buffers()
            .iter()
            .map(|t| t.buffer())
            .collect();
        let borrowed = eval.graph().forward_buffers();
        assert!(!borrowed.is_empty() && borrowed.iter().all(|t| lent.contains(&t.buffer())));
        let step = || -> (Vec<u32>, Vec<Vec<u32>>) {
            train.graph.set_batch(&tokens_a, &targets_a).unwrap();
            run(g, &train, true);
            let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            let grads = train
                .store
                .params()
                .iter()
                .map(|p| bits(p.grad.to_f32_vec().unwrap()));
            (
                bits(train.graph.logits().to_f32_vec().unwrap()),
                grads.collect(),
            )
        };
        let first = step();
        eval.set_batch(&tokens_b, &targets_b).unwrap();
        eval.forward().unwrap();
        own.graph.set_batch(&tokens_b, &targets_b).unwrap();
        run(g, &own, false);
        let logits = |m: &GptGraph| m.logits().to_f32_vec().unwrap();
        assert_eq!(logits(&eval), logits(&own.graph), "{precision} evaluation");
        let (le, lo) = (eval.loss().to_f32_vec(), own.graph.loss().to_f32_vec());
        assert_eq!(le.unwrap(), lo.unwrap(), "{precision} evaluation loss");
        assert_eq!(step(), first, "{precision}: a step after evaluation");
    }
}
