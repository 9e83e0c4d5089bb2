//! `halfgrad bench <what>`: benchmarks as commands, not timed tests.
//!
//! Timing rules (docs/ARCHITECTURE.md): GPU timestamp queries around each compute pass
//! where the adapter has them (else wall time around a blocking submit), after warm-up,
//! median of many runs, random data, inputs rotated when they are larger than a cache.
//! [`time_passes`](super::bench_timing::time_passes) implements them for any subcommand.

use super::bench_timing::{random_values, time_passes};
use halfgrad::ops::matmul::{
    matmul_with, plan_for, CoopEpilogue, CoopTile, CoopTiles, MatmulArgs, MatmulKernel,
    MatmulOptions, MatmulPlan, MatmulTuning, MatrixLayout, TiledTile,
};
use halfgrad::{DType, Error, Gpu, Result, Tensor};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchCommand,
}

#[derive(clap::Subcommand)]
enum BenchCommand {
    /// One matrix product C = op(A) @ op(B): time per product, TFLOP/s, optional check.
    Matmul(MatmulBenchArgs),
    /// A full MLP training step (forward, loss, backward, overflow check, AdamW, scaler).
    Step(super::bench_step::StepBenchArgs),
    /// Device-to-device copy bandwidth and a memory-bound kernel against it.
    Copy(super::bench_step::CopyBenchArgs),
    /// Full GPT training steps: ms, tokens/s, TFLOP/s, memory, per-kernel breakdown and
    /// attention's share.
    Gpt(super::bench_gpt::GptBenchArgs),
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    match args.what {
        BenchCommand::Matmul(a) => run_matmul(a),
        BenchCommand::Step(a) => super::bench_step::run_step(a),
        BenchCommand::Copy(a) => super::bench_step::run_copy(a),
        BenchCommand::Gpt(a) => super::bench_gpt::run_gpt(a),
    }
}

// ---------------------------------------------------------------------------------------
// bench matmul

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KernelArg {
    Auto,
    Tiled,
    Coop,
    /// bf16 operands rescaled into f16 copies for the f16 kernels.
    Rescaled,
    /// f16 operands into an f32 scratch, then an epilogue storing C.
    Widened,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CoopVariantArg {
    /// The tile kernel: operand slices staged through workgroup memory.
    Staged,
    /// The direct kernel: fragments straight from global memory (needs --coop-tile).
    Direct,
    /// Slices staged by cooperative-matrix loads and stores (needs --coop-tile).
    Copied,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CoopEpilogueArg {
    /// A 16 x 16 scratch a fragment with workgroup barriers (the default kernel's).
    Scratch,
    /// The same scratch with subgroup barriers.
    Subgroup,
    /// coopStore straight into an f32 C without bias (subgroup scratch otherwise).
    Store,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TileArg {
    Auto,
    Small,
    Large,
    Fast,
    Fast16,
}

#[derive(clap::Args)]
pub struct MatmulBenchArgs {
    /// Rows of op(A) and C.
    #[arg(long, default_value_t = 1024)]
    m: usize,
    /// Columns of op(B) and C.
    #[arg(long, default_value_t = 1024)]
    n: usize,
    /// Inner dimension.
    #[arg(long, default_value_t = 1024)]
    k: usize,
    /// Independent products in one batched dispatch (contiguous operands, one after
    /// another); FLOPs count all of them.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Instead of one product: attention's six batched, strided per-head products for
    /// B,H,T,HD (batch, heads, tokens, head width; e.g. 8,12,1024,64 for GPT-2 small,
    /// 64,6,256,64 for shakespeare-char) in the layouts of training (Q, K, V column blocks
    /// of a fused (B*T, 3C) activation; S and dP into f32, Y, dV, dQ, dK into --dtype),
    /// each timed on its own; --m, --n, --k, --batch, --out-dtype and the transposes are
    /// ignored.
    #[arg(long, value_parser = super::bench_attention::parse_attention)]
    attention: Option<(usize, usize, usize, usize)>,
    /// With --attention: pass training's causal hints (S and dP skip the tiles above the
    /// diagonal, Y and dQ / dV and dK shorten their K loops to the triangle), which the
    /// fragment-copy kernel honours; "needed TFLOP/s" counts only the triangle's FLOPs.
    #[arg(long, requires = "attention")]
    causal: bool,
    /// Operand dtype (A and B): f16, bf16 or f32.
    #[arg(long, default_value = "f16")]
    dtype: DType,
    /// Output dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    out_dtype: DType,
    /// A is stored (K, M) and read transposed.
    #[arg(long)]
    trans_a: bool,
    /// B is stored (N, K) and read transposed.
    #[arg(long)]
    trans_b: bool,
    /// Kernel: auto (coop for f16 where the adapter has cooperative matrices, rescaled+coop
    /// for bf16 there), tiled, coop, rescaled (bf16 operands on the f16 kernels).
    #[arg(long, value_enum, default_value = "auto")]
    kernel: KernelArg,
    /// Tile shape of the tiled kernel: auto, small (64x64), large (128x128), fast and
    /// fast16 (the tiled_fast kernel, 128x128, K slices of 8 or 16; even N or f32 C).
    #[arg(long, value_enum, default_value = "auto")]
    tile: TileArg,
    /// Subgroups of a coop workgroup, along M x along N (each owns a 32 x 32 block).
    #[arg(long, default_value = "1x2", value_parser = parse_grid)]
    coop_subgroups: (u32, u32),
    /// Coop tile kernel (shapes that are whole tiles): auto, off (general coop kernel),
    /// or SGMxSGN:FMxFN:BK (subgroups, fragments a subgroup, K a slice), e.g. 2x2:4x4:32.
    /// For --coop-variant direct: SGMxSGN:FMxFN:BK with BK 16 (load, then multiply) or
    /// 32 (next K step's fragments loaded before the products).
    #[arg(long, default_value = "auto", value_parser = parse_coop_tile)]
    coop_tile: CoopTiles,
    /// Coop kernel for whole tiles: staged (the tile kernel), direct or copied.
    #[arg(long, value_enum, default_value = "staged")]
    coop_variant: CoopVariantArg,
    /// How the coop tile and direct kernels write C: scratch, subgroup, store.
    #[arg(long, value_enum, default_value = "scratch")]
    coop_epilogue: CoopEpilogueArg,
    /// Workgroup order of the coop tile and direct kernels: 1 row-major, G > 1 sweeps G
    /// tile rows before the next tile column.
    #[arg(long, default_value_t = 1)]
    coop_group_m: u32,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Compare with an f64 CPU reference (up to 64 sampled rows of every product in the
    /// batch); fail past the tolerance.
    #[arg(long)]
    check: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_grid(s: &str) -> std::result::Result<(u32, u32), String> {
    let (m, n) = s
        .split_once('x')
        .ok_or_else(|| format!("expected MxN such as 2x2, got {s:?}"))?;
    let parse = |v: &str| v.trim().parse::<u32>().map_err(|e| format!("{v:?}: {e}"));
    Ok((parse(m)?, parse(n)?))
}

fn parse_coop_tile(s: &str) -> std::result::Result<CoopTiles, String> {
    match s {
        "auto" => return Ok(CoopTiles::Auto),
        "off" => return Ok(CoopTiles::Off),
        _ => {}
    }
    let parts: Vec<&str> = s.split(':').collect();
    let [sg, fr, bk] = parts[..] else {
        return Err(format!("expected auto, off or SGMxSGN:FMxFN:BK, got {s:?}"));
    };
    Ok(CoopTiles::Fixed(CoopTile {
        subgroups: parse_grid(sg)?,
        frags: parse_grid(fr)?,
        bk: bk
            .trim()
            .parse::<u32>()
            .map_err(|e| format!("{bk:?}: {e}"))?,
    }))
}

/// The whole-tile coop kernel's tile (`SGMxSGN:FMxFN:BK`) and epilogue of a plan, or
/// "none" for the other kernels.
pub(super) fn plan_desc(plan: &MatmulPlan) -> (String, &'static str) {
    // A rescaled or widened product's tile and epilogue are its f16 kernel's.
    let kernel_plan = match *plan {
        MatmulPlan::Rescaled { product } | MatmulPlan::Widened { product, .. } => product.plan(),
        single => single,
    };
    match kernel_plan {
        MatmulPlan::CoopTile(p) | MatmulPlan::CoopDirect(p) | MatmulPlan::CoopCopied(p) => {
            let t = p.tile;
            (
                format!(
                    "{}x{}:{}x{}:{}",
                    t.subgroups.0, t.subgroups.1, t.frags.0, t.frags.1, t.bk
                ),
                p.epilogue.name(),
            )
        }
        _ => ("none".to_string(), "none"),
    }
}

/// Relative-error bound for --check: f16 operands ~1e-3, bf16 ~1e-2, f32 ~1e-5, and
/// the rounding of a 16-bit output (these are the test suite's presets).
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 1e-3,
        DType::BF16 => 1e-2,
        DType::U32 => 0.0, // not a matmul operand: the kernels refuse it
    }
}

fn run_matmul(args: MatmulBenchArgs) -> Result<ExitCode> {
    let gpu = Gpu::new_blocking()?;
    let (m, n, k) = (args.m, args.n, args.k);
    let opts = MatmulOptions {
        trans_a: args.trans_a,
        trans_b: args.trans_b,
        accumulate: false,
        kernel: match args.kernel {
            KernelArg::Auto => MatmulKernel::Auto,
            KernelArg::Tiled => MatmulKernel::Tiled,
            KernelArg::Coop => MatmulKernel::Coop,
            KernelArg::Rescaled => MatmulKernel::RescaledF16,
            KernelArg::Widened => MatmulKernel::WidenedF16,
        },
    };
    let coop_tile = match (args.coop_variant, args.coop_tile) {
        (CoopVariantArg::Staged, t) => t,
        (CoopVariantArg::Direct, CoopTiles::Fixed(t)) => CoopTiles::Direct(t),
        (CoopVariantArg::Copied, CoopTiles::Fixed(t)) => CoopTiles::Copied(t),
        (_, _) => {
            let why = "--coop-variant direct|copied needs --coop-tile SGMxSGN:FMxFN:BK";
            return Err(Error::InvalidArgument(why.into()));
        }
    };
    let tuning = MatmulTuning {
        tiled: match args.tile {
            TileArg::Auto => TiledTile::Auto,
            TileArg::Small => TiledTile::Small,
            TileArg::Large => TiledTile::Large,
            TileArg::Fast => TiledTile::Fast,
            TileArg::Fast16 => TiledTile::Fast16,
        },
        coop_subgroups: args.coop_subgroups,
        coop_tile,
        coop_epilogue: match args.coop_epilogue {
            CoopEpilogueArg::Scratch => CoopEpilogue::Scratch,
            CoopEpilogueArg::Subgroup => CoopEpilogue::SubgroupScratch,
            CoopEpilogueArg::Store => CoopEpilogue::Store,
        },
        coop_group_m: args.coop_group_m,
        ..MatmulTuning::default()
    };
    if let Some(dims) = args.attention {
        let bench = super::bench_attention::AttentionBench {
            dims,
            dtype: args.dtype,
            kernel: opts.kernel,
            tuning,
            warmup: args.warmup,
            iters: args.iters,
            check: args.check,
            causal: args.causal,
            json: args.json,
            tolerance: tolerance(args.dtype),
        };
        return super::bench_attention::run_attention(&gpu, &bench);
    }
    let batch = args.batch;
    if m == 0 || n == 0 || k == 0 || batch == 0 {
        return Err(Error::InvalidArgument(
            "--m, --n, --k and --batch must be at least 1".into(),
        ));
    }
    let (a_stored, b_stored) = (
        if args.trans_a { (k, m) } else { (m, k) },
        if args.trans_b { (n, k) } else { (k, n) },
    );
    let elements = |(r, c): (usize, usize)| {
        r.checked_mul(c)
            .and_then(|x| x.checked_mul(batch))
            .ok_or_else(|| Error::InvalidArgument("--batch x matrix size overflows".into()))
    };
    let (a_len, b_len, c_len) = (elements(a_stored)?, elements(b_stored)?, elements((m, n))?);

    // Host operands, rounded to the operand dtype as the GPU will see them.
    let a_host: Vec<f32> = random_values(a_len, 1)
        .into_iter()
        .map(|x| args.dtype.round(x))
        .collect();
    let b_host: Vec<f32> = random_values(b_len, 2)
        .into_iter()
        .map(|x| args.dtype.round(x))
        .collect();
    // Inputs larger than a big GPU's last-level cache are rotated over three copies so
    // runs do not find the previous run's operands cached.
    let operand_bytes = ((a_len + b_len) * args.dtype.size_bytes()) as u64;
    let sets = if operand_bytes >= 32 << 20 { 3 } else { 1 };
    let c = Tensor::empty(&gpu, &[c_len], args.out_dtype)?;
    let mut dispatches = Vec::with_capacity(sets);
    let mut operands = Vec::with_capacity(sets);
    let mut plan = None;
    for _ in 0..sets {
        let a = Tensor::from_f32(&gpu, &[a_len], &a_host, args.dtype)?;
        let b = Tensor::from_f32(&gpu, &[b_len], &b_host, args.dtype)?;
        let product = MatmulArgs {
            a_layout: MatrixLayout::dense_batch(a_stored.0, a_stored.1, batch),
            b_layout: MatrixLayout::dense_batch(b_stored.0, b_stored.1, batch),
            c_layout: MatrixLayout::dense_batch(m, n, batch),
            batch: (1, batch),
            opts,
            tuning,
            ..MatmulArgs::new(&a, &b, &c, (m, n, k))
        };
        plan = Some(plan_for(&gpu, &product)?);
        dispatches.push(matmul_with(&gpu, &product)?);
        operands.push((a, b));
    }
    let plan = plan.expect("at least one input set");
    let kernel = plan.name();
    let (coop_tile_desc, epilogue) = plan_desc(&plan);

    let timing = time_passes(&gpu, args.warmup, args.iters, |pass, i| {
        dispatches[i % sets].iter().for_each(|d| d.encode(pass))
    })?;
    let ms = timing.median_ms();
    let tflops = 2.0 * batch as f64 * m as f64 * n as f64 * k as f64 / (ms * 1e-3) / 1e12;

    // Every product of the batch against f64: the largest error and the rows checked.
    let check = if args.check {
        gpu.run_all(&dispatches[0])?;
        let out = c.to_f32_vec()?;
        let (a_size, b_size, c_size) = (a_len / batch, b_len / batch, c_len / batch);
        let mut worst = (0.0f64, 0usize);
        for i in 0..batch {
            let (err, rows) = check_rows(
                &a_host[i * a_size..(i + 1) * a_size],
                &b_host[i * b_size..(i + 1) * b_size],
                &out[i * c_size..(i + 1) * c_size],
                m,
                n,
                k,
                args.trans_a,
                args.trans_b,
            );
            worst = (
                worst.0.max(if err.is_nan() { f64::INFINITY } else { err }),
                worst.1 + rows,
            );
        }
        Some(worst)
    } else {
        None
    };
    let limit = tolerance(args.dtype).max(tolerance(args.out_dtype));
    let passed = check.is_none_or(|(err, _)| err <= limit);

    let facts = gpu.adapter();
    if args.json {
        let mut obj = serde_json::json!({
            "bench": "matmul",
            "kernel": kernel,
            "m": m,
            "n": n,
            "k": k,
            "batch": batch,
            "dtype": args.dtype.name(),
            "out_dtype": args.out_dtype.name(),
            "trans_a": args.trans_a,
            "trans_b": args.trans_b,
            "ms": ms,
            "tflops": tflops,
            "iters": timing.samples_ms.len(),
            "timing": timing.method,
            "input_sets": sets,
            "coop_subgroups": format!("{}x{}", args.coop_subgroups.0, args.coop_subgroups.1),
            "coop_tile": coop_tile_desc,
            "coop_epilogue": epilogue,
            "coop_group_m": args.coop_group_m,
            "adapter": facts.name,
            "backend": facts.backend,
        });
        if let Some((err, rows)) = check {
            obj["rel_err"] = serde_json::json!(err);
            obj["checked_rows"] = serde_json::json!(rows);
            obj["tolerance"] = serde_json::json!(limit);
            obj["passed"] = serde_json::json!(passed);
        }
        println!("{obj}");
    } else {
        let layout = format!(
            "{}{}",
            if args.trans_a { "A^T" } else { "A" },
            if args.trans_b { " @ B^T" } else { " @ B" }
        );
        let batch_desc = if batch == 1 {
            String::new()
        } else {
            format!("batch {batch} x ")
        };
        println!("adapter  {} ({})", facts.name, facts.backend);
        println!(
            "matmul   {batch_desc}M={m} N={n} K={k}  {layout}  {} x {} -> {}  kernel {kernel}",
            args.dtype, args.dtype, args.out_dtype
        );
        if coop_tile_desc != "none" {
            println!(
                "coop     tile {coop_tile_desc}  epilogue {epilogue}  group_m {}",
                args.coop_group_m
            );
        }
        println!(
            "time     {ms:.4} ms per {} (median of {}, {}; {} input set{})",
            if batch == 1 {
                "product".to_string()
            } else {
                format!("batch of {batch} products")
            },
            timing.samples_ms.len(),
            timing.method,
            sets,
            if sets == 1 { "" } else { "s" }
        );
        println!("rate     {tflops:.3} TFLOP/s ({:.2} GFLOP/s)", tflops * 1e3);
        if let Some((err, rows)) = check {
            println!(
                "check    rel err {err:.3e} vs f64 reference over {rows} rows (tolerance {limit:.0e}): {}",
                if passed { "ok" } else { "FAILED" }
            );
        }
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// ||C - ref|| / ||ref|| over up to 64 evenly spaced rows of C, the reference in f64
/// from the host operands (already rounded to their dtype). Returns (error, rows).
#[allow(clippy::too_many_arguments)]
fn check_rows(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
) -> (f64, usize) {
    let rows: Vec<usize> = if m <= 64 {
        (0..m).collect()
    } else {
        (0..64).map(|r| r * (m - 1) / 63).collect()
    };
    // op(B) as a (K, N) row-major f64 matrix, so each row's reference streams through it.
    let mut op_b = vec![0.0f64; k * n];
    for p in 0..k {
        for j in 0..n {
            op_b[p * n + j] = f64::from(if trans_b { b[j * k + p] } else { b[p * n + j] });
        }
    }
    let row_sums = |i: usize| -> (f64, f64) {
        let mut reference = vec![0.0f64; n];
        for p in 0..k {
            let x = f64::from(if trans_a { a[p * m + i] } else { a[i * k + p] });
            for (r, &y) in reference.iter_mut().zip(&op_b[p * n..(p + 1) * n]) {
                *r += x * y;
            }
        }
        let (mut num, mut den) = (0.0, 0.0);
        for (j, r) in reference.iter().enumerate() {
            let out = f64::from(c[i * n + j]);
            num += if out.is_finite() {
                (out - r).powi(2)
            } else {
                f64::INFINITY
            };
            den += r * r;
        }
        (num, den)
    };
    let row_sums = &row_sums;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let chunk = rows.len().div_ceil(threads).max(1);
    let (num, den) = std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|&i| row_sums(i))
                        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reference thread"))
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    let err = if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    };
    (err, rows.len())
}
