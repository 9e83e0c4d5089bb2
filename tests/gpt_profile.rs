//! Per-dispatch wall time of one GPT training step (run by hand:
//! `cargo test --test gpt_profile -- --ignored --nocapture`).

use halfgrad::amp::{constant_scale, OverflowFlag, Policy, Precision};
use halfgrad::kernels::record_dispatches;
use halfgrad::nn::gpt::{upload_params, GptConfig, GptGraph, GptWeights};
use halfgrad::nn::LayerCtx;
use halfgrad::Gpu;
use std::collections::BTreeMap;
use std::time::Instant;

#[test]
#[ignore]
fn profile_tiny_step() {
    let gpu = Gpu::new_blocking().unwrap();
    let config = GptConfig::tiny();
    let flag = OverflowFlag::new(&gpu).unwrap();
    let ctx = LayerCtx::new(&gpu, Policy::new(Precision::F16), &flag);
    let w = GptWeights::init(&config, 0).unwrap();
    let store = upload_params(&ctx, &w).unwrap();
    let scale = constant_scale(&gpu, 1.0).unwrap();
    let b = 16;
    let graph = GptGraph::new(&ctx, &config, &store, (b, config.block), &scale, true).unwrap();
    let tokens: Vec<u32> = (0..b * config.block)
        .map(|i| (i * 31 % 256) as u32)
        .collect();
    graph.set_batch(&tokens, &tokens).unwrap();
    let mut dummy = gpu.encoder("x");
    let dispatches = {
        let mut pass = dummy.begin_compute_pass(&Default::default());
        record_dispatches(|| graph.encode_forward_backward(&mut pass))
    };
    drop(dummy);
    let mut by_label: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    let total_start = Instant::now();
    for d in &dispatches {
        gpu.wait_idle().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            let mut enc = gpu.encoder("p");
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                d.encode(&mut pass);
            }
            gpu.submit(enc.finish()).unwrap();
        }
        gpu.wait_idle().unwrap();
        let dt = t0.elapsed().as_secs_f64() / 3.0;
        if std::env::var("PROFILE_ALL").is_ok() {
            println!("{:40} {:?} {:8.1} ms", d.label, d.workgroups, dt * 1e3);
        }
        let e = by_label.entry(d.label).or_default();
        e.0 += dt;
        e.1 += 1;
    }
    let mut v: Vec<_> = by_label.into_iter().collect();
    v.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let sum: f64 = v.iter().map(|x| x.1 .0).sum();
    for (label, (t, n)) in &v {
        println!("{label:40} {n:4} dispatches {:8.1} ms", t * 1e3);
    }
    println!(
        "total {:.1} ms per step ({} dispatches), wall {:.1}s",
        sum * 1e3,
        dispatches.len(),
        total_start.elapsed().as_secs_f64()
    );
}
