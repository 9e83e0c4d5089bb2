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
