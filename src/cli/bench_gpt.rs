//! `halfgrad bench gpt`: full GPT training steps (forward, cross-entropy, backward,
//! overflow check, AdamW, scaler) as `halfgrad gpt train` runs them, on random tokens;
//! the peer is `peers/torch_gpt_step.py` (PyTorch eager AMP on the same config).
//!
//! Headline time is wall clock over `iters` steps (tokens uploaded each step, as in
//! training) ended by one wait; GPU time of the step's pass and the per-kernel
//! breakdown come from timestamps where the adapter has them (as `bench step`).

use super::bench_step::{median, query_set, read_pairs};
use halfgrad::amp::Precision;
use halfgrad::kernels::record_dispatches;
use halfgrad::nn::gpt::GptConfig;
use halfgrad::train::{GptTrainConfig, GptTrainer};
use halfgrad::{Gpu, Result};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct GptBenchArgs {
    /// Transformer blocks.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Attention heads per block.
    #[arg(long, default_value_t = 2)]
    heads: usize,
    /// Width of the residual stream.
    #[arg(long, default_value_t = 64)]
    embd: usize,
    /// Context length (tokens per sequence).
    #[arg(long, default_value_t = 64)]
    block: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 256)]
    vocab: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f16")]
    precision: Precision,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Skip the per-kernel breakdown.
    #[arg(long)]
    no_breakdown: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Whether a recorded dispatch belongs to attention: its own kernels, and the batched
/// matrix products (QK^T, PV and their gradients; one workgroup layer per (sequence,
/// head)). With batch x heads = 1 those products count as other products.
fn is_attention(label: &str, workgroups: [u32; 3]) -> bool {
    label.starts_with("attention/") || (label.starts_with("matmul") && workgroups[2] > 1)
}

pub fn run_gpt(args: GptBenchArgs) -> Result<ExitCode> {
    let model = GptConfig {
        vocab: args.vocab,
        block: args.block,
        n_layer: args.layers,
        n_head: args.heads,
        n_embd: args.embd,
    };
    let config = GptTrainConfig {
        model,
        precision: args.precision,
        batch: args.batch,
        ..GptTrainConfig::tiny(1_000_000)
    };
    let gpu = Gpu::new_blocking()?;
    let mut trainer = GptTrainer::new(&gpu, config, None)?;
    let tokens_per_step = trainer.tokens_per_step();
    // Random tokens (a fixed LCG), targets the next token of the same stream.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % args.vocab as u64) as u32
    };
    let stream: Vec<u32> = (0..=tokens_per_step).map(|_| next()).collect();
    let (tokens, targets) = (&stream[..tokens_per_step], &stream[1..]);

    let iters = args.iters.max(1);
    for _ in 0..args.warmup.max(1) {
        trainer.step_on(tokens, targets)?;
    }
    gpu.wait_idle()?;
    let t = Instant::now();
    for _ in 0..iters {
        trainer.step_on(tokens, targets)?;
    }
    gpu.wait_idle()?;
    let wall_ms = t.elapsed().as_secs_f64() * 1e3 / iters as f64;

    let graph = trainer.train_graph();
    let optim = trainer.optimizer();
    let mut gpu_ms = None;
    let mut families: BTreeMap<&'static str, (usize, f64)> = BTreeMap::new();
    let mut attention_ms = 0.0;
    if gpu.caps().timestamps {
        let n = iters.clamp(1, 1024) as u32;
        let (q, buf) = query_set(&gpu, 2 * n);
        let mut enc = gpu.encoder("timed gpt steps");
        for i in 0..n {
            optim.clear_flag(&mut enc);
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("gpt training step"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &q,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: Some(2 * i + 1),
                }),
            });
            graph.encode_forward_backward(&mut pass);
            optim.encode_step(&mut pass);
        }
        gpu_ms = Some(median(read_pairs(&gpu, enc, &q, &buf, n)?));

        if !args.no_breakdown {
            let mut scratch = gpu.encoder("record");
            let dispatches = {
                let mut pass = scratch.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: None,
                });
                record_dispatches(|| {
                    graph.encode_forward_backward(&mut pass);
                    optim.encode_step(&mut pass);
                })
            };
            drop(scratch); // never submitted: recording only
            const REPEATS: usize = 3;
            let count = dispatches.len() as u32;
            let (q, buf) = query_set(&gpu, 2 * count);
            let mut per_dispatch = vec![Vec::new(); dispatches.len()];
            for _ in 0..REPEATS {
                let mut enc = gpu.encoder("breakdown");
                for (i, d) in dispatches.iter().enumerate() {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(d.label),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &q,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    d.encode(&mut pass);
                }
                for (i, ms) in read_pairs(&gpu, enc, &q, &buf, count)?
                    .into_iter()
                    .enumerate()
                {
                    per_dispatch[i].push(ms);
                }
            }
            for (d, times) in dispatches.iter().zip(per_dispatch) {
                let ms = median(times);
                let e = families.entry(d.label).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += ms;
                if is_attention(d.label, d.workgroups) {
                    attention_ms += ms;
                }
            }
        }
    }
    let (stats, overflows) = trainer.stats_and_overflows_blocking()?;
    let params = trainer.num_params();
    let tokens_s = tokens_per_step as f64 / wall_ms * 1e3;
    // nanoGPT's estimate: 6 N per token for the weights (forward + backward) plus
    // 12 L C T for attention's two products.
    let flops_per_token =
        6.0 * params as f64 + 12.0 * (args.layers * args.embd * args.block) as f64;
    let tflops = flops_per_token * tokens_s / 1e12;
    let total_ms: f64 = families.values().map(|v| v.1).sum();
    let attention_share = (total_ms > 0.0).then(|| attention_ms / total_ms);
    let memory = trainer.memory();
    let peak_bytes = memory.total();
    if args.json {
        let breakdown: Vec<_> = families
            .iter()
            .map(|(k, (n, ms))| serde_json::json!({"kernel": k, "dispatches": n, "ms": ms}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "bench": "gpt", "precision": args.precision.name(),
                "path": trainer.describe_path(),
                "layers": args.layers, "heads": args.heads, "embd": args.embd,
                "block": args.block, "vocab": args.vocab, "batch": args.batch,
                "parameters": params, "tokens_per_step": tokens_per_step,
                "ms": wall_ms, "gpu_pass_ms": gpu_ms, "tokens_per_s": tokens_s,
                "tflops": tflops, "peak_bytes": peak_bytes,
                "attention_share": attention_share, "attention_ms": attention_ms,
                "loss": stats.loss, "loss_scale": stats.loss_scale,
                "skipped_steps": stats.skipped_steps,
                "overflow_tensors": overflows.iter()
                    .map(|(n, c)| (n.clone(), serde_json::json!(c)))
                    .collect::<serde_json::Map<_, _>>(),
                "adapter": gpu.adapter().name, "breakdown": breakdown,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "adapter   {} ({})",
        gpu.adapter().name,
        gpu.adapter().backend
    );
    println!(
        "step      GPT {} layers, {} heads, {} wide, block {}, vocab {}, batch {}: {params} \
         parameters, {} ({})",
        args.layers,
        args.heads,
        args.embd,
        args.block,
        args.vocab,
        args.batch,
        args.precision,
        trainer.describe_path()
    );
    println!("time      {wall_ms:.3} ms/step (wall clock over {iters} steps)");
    if let Some(g) = gpu_ms {
        println!("          {g:.3} ms/step on the GPU (timestamps around the step's pass, median)");
    }
    println!("rate      {tokens_s:.0} tokens/s, {tflops:.3} TFLOP/s (6 N + 12 L C T per token)");
    println!(
        "memory    {peak_bytes} bytes held by the training graph and parameters ({})",
        memory.summary_line()
    );
    println!(
        "state     loss {:.4}, loss scale {}, skipped steps {}",
        stats.loss, stats.loss_scale, stats.skipped_steps
    );
    if !families.is_empty() {
        println!("breakdown (each dispatch in its own timestamped pass, median of 3)");
        for (k, (n, ms)) in &families {
            println!(
                "  {k:<26} {n:>4} dispatches {ms:>9.3} ms  {:>5.1}%",
                100.0 * ms / total_ms
            );
        }
        if let Some(share) = attention_share {
            println!(
                "attention {attention_ms:.3} ms, {:.1}% of the kernels' time (attention kernels + \
                 batched QK^T / PV products)",
                100.0 * share
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
