//! `halfgrad bench step` (a whole MLP training step) and `halfgrad bench copy` (the
//! memory-bandwidth ceiling that the memory-bound kernels are measured against).
//!
//! The step is the PyTorch peer's (`peers/torch_mlp_step.py`): Linear + GELU stack,
//! softmax cross-entropy, backward, overflow check, fused AdamW, scaler update, on random
//! inputs. Headline time is wall clock over many steps ended by one wait, the same method
//! as the peer (`perf_counter` around 20 steps and a synchronize). The per-kernel
//! breakdown replays each recorded dispatch of one step in its own timestamped pass.

use super::bench_timing::{random_values, time_passes, Timing};
use halfgrad::amp::{LossScaler, Policy, Precision, ScalerConfig};
use halfgrad::kernels::record_dispatches;
use halfgrad::nn::{LayerCtx, Mlp, MlpConfig};
use halfgrad::ops::activation::Activation;
use halfgrad::optim::{AdamConfig, AdamW};
use halfgrad::{Error, Gpu, Result};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct StepBenchArgs {
    /// Samples per step.
    #[arg(long, default_value_t = 2048)]
    batch: usize,
    /// Layer widths, input first, classes last.
    #[arg(long, default_value = "1024,4096,4096,1024", value_delimiter = ',')]
    dims: Vec<usize>,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f16")]
    precision: Precision,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Skip the per-kernel breakdown.
    #[arg(long)]
    no_breakdown: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

struct Bench {
    gpu: Gpu,
    mlp: Mlp,
    adamw: AdamW,
}

impl Bench {
    fn new(gpu: &Gpu, args: &StepBenchArgs) -> Result<Bench> {
        let policy = Policy::new(args.precision);
        let scaler = LossScaler::new(gpu, ScalerConfig::for_precision(args.precision))?;
        let ctx = LayerCtx::new(gpu, policy, scaler.flag());
        let config = MlpConfig {
            widths: args.dims.clone(),
            activation: Activation::Gelu,
            layer_norm: false,
            bias: true,
        };
        let mlp = Mlp::new(&ctx, &config, args.batch, 0, scaler.scale_buffer())?;
        let classes = *args.dims.last().unwrap_or(&1);
        let x = random_values(args.batch * args.dims[0], 1);
        let labels: Vec<u32> = (0..args.batch)
            .map(|i| ((i * 7919) % classes) as u32)
            .collect();
        mlp.set_batch(&x, &labels)?;
        let params = mlp.params();
        // Backward overwrites the gradients (GradMode::Overwrite), as in the trainer.
        let adamw = AdamW::with_grad_clearing(gpu, &params, AdamConfig::default(), &scaler, false)?;
        Ok(Bench {
            gpu: gpu.clone(),
            mlp,
            adamw,
        })
    }

    /// One training step as the trainer encodes it: clear the flag, one compute pass.
    fn encode_step(
        &self,
        enc: &mut wgpu::CommandEncoder,
        timestamps: Option<(&wgpu::QuerySet, u32)>,
    ) {
        self.adamw.clear_flag(enc);
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("training step"),
            timestamp_writes: timestamps.map(|(q, i)| wgpu::ComputePassTimestampWrites {
                query_set: q,
                beginning_of_pass_write_index: Some(i),
                end_of_pass_write_index: Some(i + 1),
            }),
        });
        self.mlp.encode_forward_backward(&mut pass);
        self.adamw.encode_step(&mut pass);
    }

    fn run_steps(&self, n: usize) -> Result<()> {
        for _ in 0..n {
            let mut enc = self.gpu.encoder("training step");
            self.encode_step(&mut enc, None);
            self.gpu.submit(enc.finish())?;
        }
        Ok(())
    }
}

pub(crate) fn query_set(gpu: &Gpu, count: u32) -> (wgpu::QuerySet, wgpu::Buffer) {
    let q = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("bench timestamps"),
        ty: wgpu::QueryType::Timestamp,
        count,
    });
    let b = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("bench timestamps"),
        size: 8 * count as u64,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    (q, b)
}

/// Resolves `pairs` (begin, end) timestamp pairs and returns their durations in ms.
pub(crate) fn read_pairs(
    gpu: &Gpu,
    enc: wgpu::CommandEncoder,
    q: &wgpu::QuerySet,
    buf: &wgpu::Buffer,
    pairs: u32,
) -> Result<Vec<f64>> {
    let mut enc = enc;
    enc.resolve_query_set(q, 0..2 * pairs, buf, 0);
    gpu.submit(enc.finish())?;
    let bytes = gpu.read_buffer_blocking(buf, 16 * pairs as u64)?;
    let ticks: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let period_ns = f64::from(gpu.queue().get_timestamp_period());
    Ok((0..pairs as usize)
        .map(|p| ticks[2 * p + 1].wrapping_sub(ticks[2 * p]) as f64 * period_ns * 1e-6)
        .collect())
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

pub fn run_step(args: StepBenchArgs) -> Result<ExitCode> {
    if args.dims.len() < 2 {
        return Err(Error::InvalidArgument(
            "--dims needs at least an input and an output width".into(),
        ));
    }
    let gpu = Gpu::new_blocking()?;
    let bench = Bench::new(&gpu, &args)?;
    let weights: usize = args.dims.windows(2).map(|w| w[0] * w[1]).sum();
    let flops = 6.0 * args.batch as f64 * weights as f64;

    bench.run_steps(args.warmup.max(1))?;
    gpu.wait_idle()?;
    // Headline: wall clock over `iters` submitted steps and one wait (the peer's method).
    let t = Instant::now();
    bench.run_steps(args.iters.max(1))?;
    gpu.wait_idle()?;
    let wall_ms = t.elapsed().as_secs_f64() * 1e3 / args.iters.max(1) as f64;

    // GPU time of the step's pass, and the breakdown, where timestamps exist.
    let mut gpu_ms = None;
    let mut families: BTreeMap<&'static str, (usize, f64)> = BTreeMap::new();
    if gpu.caps().timestamps {
        let n = args.iters.clamp(1, 1024) as u32;
        let (q, buf) = query_set(&gpu, 2 * n);
        let mut enc = gpu.encoder("timed steps");
        for i in 0..n {
            bench.encode_step(&mut enc, Some((&q, 2 * i)));
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
                    bench.mlp.encode_forward_backward(&mut pass);
                    bench.adamw.encode_step(&mut pass);
                })
            };
            drop(scratch); // never submitted: recording only
            const REPEATS: usize = 5;
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
                let e = families.entry(d.label).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += median(times);
            }
        }
    }
    let stats = bench.adamw.stats_blocking()?;
    let loss = bench.mlp.read_loss_blocking()?;
    let samples_s = args.batch as f64 / wall_ms * 1e3;
    let tflops = flops / (wall_ms * 1e-3) / 1e12;
    let path = match args.precision {
        Precision::F16 => gpu.caps().f16_path(),
        Precision::BF16 => "bf16",
        Precision::F32 => "f32",
    };
    if args.json {
        let breakdown: Vec<_> = families
            .iter()
            .map(|(k, (n, ms))| serde_json::json!({"kernel": k, "dispatches": n, "ms": ms}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "bench": "step", "precision": args.precision.name(), "path": path,
                "batch": args.batch, "dims": args.dims, "ms": wall_ms, "gpu_pass_ms": gpu_ms,
                "samples_per_s": samples_s, "tflops": tflops, "loss": loss,
                "loss_scale": stats.scale, "skipped_steps": stats.skipped_steps,
                "adapter": gpu.adapter().name, "breakdown": breakdown,
            })
        );
    } else {
        println!(
            "adapter   {} ({})",
            gpu.adapter().name,
            gpu.adapter().backend
        );
        println!(
            "step      MLP {:?}, batch {}, {} ({path}), {} weights",
            args.dims, args.batch, args.precision, weights
        );
        println!(
            "time      {wall_ms:.3} ms/step (wall clock over {} steps)",
            args.iters.max(1)
        );
        if let Some(g) = gpu_ms {
            println!(
                "          {g:.3} ms/step on the GPU (timestamps around the step's pass, median)"
            );
        }
        println!("rate      {samples_s:.0} samples/s, {tflops:.2} TFLOP/s (6 x batch x weights)");
        println!(
            "state     loss {loss:.4}, loss scale {}, skipped steps {}",
            stats.scale, stats.skipped_steps
        );
        if !families.is_empty() {
            let total: f64 = families.values().map(|v| v.1).sum();
            println!("breakdown (each dispatch in its own timestamped pass, median of 5)");
            for (k, (n, ms)) in &families {
                println!(
                    "  {k:<22} {n:>3} dispatches {ms:>9.3} ms  {:>5.1}%",
                    100.0 * ms / total
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct CopyBenchArgs {
    /// Megabytes copied per run.
    #[arg(long, default_value_t = 1024)]
    mb: u64,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Device-to-device copy bandwidth (read + write bytes per second): `copy_buffer_to_buffer`
/// timed on the host over many copies, copy kernels in 16-byte words, and our memory-bound
/// kernels (casts, add_into, GELU, AdamW) timed with timestamps, each as GB/s and as a
/// ratio to the copies.
pub fn run_copy(args: CopyBenchArgs) -> Result<ExitCode> {
    let gpu = Gpu::new_blocking()?;
    let bytes = (args.mb << 20).min(gpu.caps().max_storage_buffer_binding_size / 16 * 16);
    let n = (bytes / 4) as usize;
    let x = halfgrad::Tensor::empty(&gpu, &[n], halfgrad::DType::F32)?;
    let y = halfgrad::Tensor::empty(&gpu, &[n], halfgrad::DType::F32)?;
    let h = halfgrad::Tensor::empty(&gpu, &[n], halfgrad::DType::F16)?;
    let copy_once = |enc: &mut wgpu::CommandEncoder| {
        enc.copy_buffer_to_buffer(x.buffer(), 0, y.buffer(), 0, bytes)
    };
    let mut enc = gpu.encoder("warm-up");
    copy_once(&mut enc);
    gpu.submit(enc.finish())?;
    gpu.wait_idle()?;
    let t = Instant::now();
    let mut enc = gpu.encoder("copies");
    for _ in 0..args.iters.max(1) {
        copy_once(&mut enc);
    }
    gpu.submit(enc.finish())?;
    gpu.wait_idle()?;
    let copy_ms = t.elapsed().as_secs_f64() * 1e3 / args.iters.max(1) as f64;
    let copy_gbs = 2.0 * bytes as f64 / (copy_ms * 1e-3) / 1e9;

    // The copy ceiling: the cast kernel f32 -> f32 (8 bytes an element; 16-byte accesses
    // since the //!words16 preludes, 4-byte ones before), timed like every kernel.
    let copy_kernel = halfgrad::ops::cast::cast(&gpu, &x, &y)?;
    let copy_timing: Timing = time_passes(&gpu, 3, args.iters, |pass, _| copy_kernel.encode(pass))?;
    let kcopy_gbs = 8.0 * n as f64 / (copy_timing.median_ms() * 1e-3) / 1e9;
    // The same copy in 16-byte words, 1, 2 and 4 an invocation: how far wider accesses
    // lift the ceiling of our memory-bound kernels.
    let mut word_gbs = Vec::new();
    for words in [1u32, 2, 4] {
        let k = halfgrad::ops::cast::copy_words(&gpu, &x, &y, words)?;
        let t: Timing = time_passes(&gpu, 3, args.iters, |pass, _| k.encode(pass))?;
        word_gbs.push((
            words,
            2.0 * x.buffer().size() as f64 / (t.median_ms() * 1e-3) / 1e9,
        ));
    }
    let cast = halfgrad::ops::cast::cast(&gpu, &x, &h)?;
    let timing: Timing = time_passes(&gpu, 3, args.iters, |pass, _| cast.encode(pass))?;
    let cast_ms = timing.median_ms();
    let cast_gbs = 6.0 * n as f64 / (cast_ms * 1e-3) / 1e9;
    // A bias gradient of the shakespeare-char GPT: the column sums of a (16384, 384) f16
    // dy, two passes (partial sums of row chunks, then their sum); bytes = dy's.
    let (rows, cols) = (16384, 384);
    let dy = halfgrad::Tensor::empty(&gpu, &[rows, cols], halfgrad::DType::F16)?;
    let db = halfgrad::Tensor::empty(&gpu, &[cols], halfgrad::DType::F32)?;
    let partial = match halfgrad::ops::reduce::partial_sums_shape(rows, cols) {
        Some(shape) => Some(halfgrad::Tensor::empty(&gpu, &shape, halfgrad::DType::F32)?),
        None => None,
    };
    let sums = halfgrad::ops::reduce::col_sum(&gpu, &dy, &db, partial.as_ref(), false)?;
    let sum_timing: Timing = time_passes(&gpu, 3, args.iters, |pass, _| {
        sums.iter().for_each(|d| d.encode(pass))
    })?;
    let sum_ms = sum_timing.median_ms();
    let sum_gbs = (2 * rows * cols) as f64 / (sum_ms * 1e-3) / 1e9;
    let best_words_gbs = word_gbs.iter().map(|(_, g)| *g).fold(0.0, f64::max);
    let kernels = time_memory_bound_kernels(&gpu, n.min(MEMORY_BOUND_ELEMENTS), args.iters)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"bench": "copy", "bytes": bytes, "copy_ms": copy_ms, "copy_gb_s": copy_gbs,
                "kernels": kernels.iter().map(|k| {
                    let gbs = k.gb_s();
                    serde_json::json!({"kernel": k.name, "elements": k.elements,
                        "bytes_per_element": k.bytes_per_element, "ms": k.ms, "gb_s": gbs,
                        "ratio_copy": gbs / copy_gbs, "ratio_copy_words": gbs / best_words_gbs})
                }).collect::<Vec<_>>(),
                "copy_kernel_gb_s": kcopy_gbs,
                "copy_words_gb_s": word_gbs.iter().map(|(w, g)| serde_json::json!({"words": w, "gb_s": g})).collect::<Vec<_>>(),
                "cast_f32_f16_ms": cast_ms, "cast_gb_s": cast_gbs, "cast_ratio": cast_gbs / kcopy_gbs,
                "col_sum_16384x384_f16_ms": sum_ms, "col_sum_gb_s": sum_gbs,
                "timing": timing.method, "adapter": gpu.adapter().name})
        );
    } else {
        println!("adapter  {}", gpu.adapter().name);
        println!("copy     {} MiB: {copy_ms:.3} ms, {copy_gbs:.0} GB/s (read + write, copy_buffer_to_buffer)", bytes >> 20);
        println!(
            "copy     kernel (f32 -> f32 streaming copy): {kcopy_gbs:.0} GB/s ({})",
            copy_timing.method
        );
        for (words, gbs) in &word_gbs {
            println!("copy     kernel, {words} x 16-byte words an invocation: {gbs:.0} GB/s");
        }
        println!(
            "cast     f32 -> f16: {cast_ms:.3} ms, {cast_gbs:.0} GB/s = {:.2}x the copy kernel",
            cast_gbs / kcopy_gbs
        );
        println!(
            "col_sum  f16 {rows} x {cols} ({} dispatches): {sum_ms:.4} ms, {sum_gbs:.0} GB/s read = {:.2}x the copy kernel",
            sums.len(),
            sum_gbs / kcopy_gbs
        );
        println!(
            "memory-bound kernels (16-byte accesses unless named), {}M elements each; GB/s = (bytes read + written) / median GPU time; \
             ratios to copy_buffer_to_buffer ({copy_gbs:.0}) and to the best 16-byte-word copy \
             kernel ({best_words_gbs:.0}); the issue's target is 0.8x PyTorch's copy (torch_copy.py):",
            kernels.first().map_or(0, |k| k.elements >> 20)
        );
        for k in &kernels {
            let gbs = k.gb_s();
            println!(
                "  {:<36} {:>2} B/element: {:.3} ms, {gbs:>5.0} GB/s = {:.2}x copy, {:.2}x word copy",
                k.name,
                k.bytes_per_element,
                k.ms,
                gbs / copy_gbs,
                gbs / best_words_gbs
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Elements of each tensor in the memory-bound kernel figures of `bench copy` (64M:
/// 256 MiB an f32 tensor, well past every cache).
const MEMORY_BOUND_ELEMENTS: usize = 64 << 20;

/// One memory-bound kernel's figure in `bench copy`.
struct KernelFigure {
    name: &'static str,
    elements: usize,
    /// Bytes the kernel reads plus bytes it writes, per element.
    bytes_per_element: usize,
    /// Median GPU time of one dispatch.
    ms: f64,
}

impl KernelFigure {
    fn gb_s(&self) -> f64 {
        (self.elements * self.bytes_per_element) as f64 / (self.ms * 1e-3) / 1e9
    }
}

/// Times each kernel moved onto the 16-byte storage preludes on `n`-element tensors
/// (contents are whatever fresh buffers hold: the kernels' speed does not depend on it).
fn time_memory_bound_kernels(gpu: &Gpu, n: usize, iters: usize) -> Result<Vec<KernelFigure>> {
    use halfgrad::ops::{accumulate, activation, adam, cast, embedding, loss_scale};
    use halfgrad::{DType, Tensor};
    let tensor = |dtype| Tensor::empty(gpu, &[n], dtype);
    let (a32, b32) = (tensor(DType::F32)?, tensor(DType::F32)?);
    let (c32, d32) = (tensor(DType::F32)?, tensor(DType::F32)?);
    let (a16, b16, c16) = (
        tensor(DType::F16)?,
        tensor(DType::F16)?,
        tensor(DType::F16)?,
    );
    let bf = tensor(DType::BF16)?;
    let flag = halfgrad::flag::OverflowFlag::new(gpu)?;
    // Optimizer state words, zeroed: work[SKIP] = 0, so every element is updated.
    let words = || Tensor::zeros(gpu, &[64], DType::U32);
    let (scaler, work, hyper) = (words()?, words()?, words()?);
    let partials = Tensor::zeros(gpu, &[loss_scale::check_groups(n) as usize], DType::F32)?;
    let state = adam::StateBuffers {
        scaler: scaler.buffer(),
        work: work.buffer(),
        hyper: hyper.buffer(),
    };
    let update = |low| adam::UpdateTensors {
        master: &a32,
        grad: &b32,
        exp_avg: &c32,
        exp_avg_sq: &d32,
        low,
    };
    // C 1024 divides n (a multiple of 2^18), so x has the n elements the figure counts.
    let (channels, vocab, block) = (1024, 16384, 1024);
    let rows = (n / channels).max(1);
    let token_ids: Vec<u32> = (0..rows).map(|p| (p * 7919 % vocab) as u32).collect();
    let emb = (
        Tensor::from_u32(gpu, &[rows], &token_ids)?,
        Tensor::empty(gpu, &[vocab, channels], DType::F32)?,
        Tensor::empty(gpu, &[block, channels], DType::F32)?,
        Tensor::empty(gpu, &[rows, channels], DType::F32)?,
    );
    let cases: Vec<(&'static str, usize, halfgrad::kernels::Dispatch)> = vec![
        ("cast f32 -> f32", 8, cast::cast(gpu, &a32, &b32)?),
        ("cast f32 -> f16", 6, cast::cast(gpu, &a32, &a16)?),
        ("cast f16 -> f32", 6, cast::cast(gpu, &a16, &a32)?),
        ("cast f16 -> bf16", 4, cast::cast(gpu, &a16, &bf)?),
        (
            "add_into f16 += f16",
            6,
            accumulate::add_into(gpu, &a16, &b16, &flag)?,
        ),
        (
            "add_into f32 += f32",
            12,
            accumulate::add_into(gpu, &a32, &b32, &flag)?,
        ),
        (
            "gelu_forward f16 -> f16",
            4,
            activation::forward(gpu, Activation::Gelu, &a16, &b16, &flag)?,
        ),
        (
            "gelu_backward f16 (x, dy -> dx)",
            6,
            activation::backward(gpu, Activation::Gelu, &a16, &b16, &c16, &flag)?,
        ),
        // Reads grad, master, m, v (16 B); writes master, m, v, the cleared grad (16 B)
        // and the 2-byte copy.
        (
            "adamw_low f32 state + f16 copy",
            34,
            adam::update(gpu, &update(Some(&a16)), state)?,
        ),
        (
            "adamw f32 state",
            32,
            adam::update(gpu, &update(None), state)?,
        ),
        // V 16,384 (64 MiB, within every binding limit), T 1,024, C 1024, tokens spread
        // over the table; counted: the wte and wpe reads and the x write, 4 bytes each.
        (
            "embedding forward f32, C 1024",
            12,
            embedding::forward(gpu, &emb.0, 1024, &emb.1, &emb.2, &emb.3)?,
        ),
        // Not on the 16-byte path (ARCHITECTURE.md says why): for comparison. Reads only.
        (
            "loss_scale/check f32 (4-byte reads)",
            4,
            loss_scale::check(gpu, &a32, scaler.buffer(), partials.buffer(), 0, &flag)?,
        ),
    ];
    let mut out = Vec::new();
    for (name, bytes_per_element, dispatch) in cases {
        let t: Timing = time_passes(gpu, 3, iters, |pass, _| dispatch.encode(pass))?;
        out.push(KernelFigure {
            name,
            elements: n,
            bytes_per_element,
            ms: t.median_ms(),
        });
    }
    Ok(out)
}
