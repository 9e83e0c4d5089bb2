//! `halfgrad bench matmul --attention B,H,T,HD [--causal]`: attention's six batched,
//! strided per-head products (the layouts of src/nn/gpt/attention.rs), each timed on its
//! own, with its kernel, tile, epilogue and TFLOP/s, and an optional f64 check.
//!
//! P and dS are lower-triangular, as the softmax kernels write them. `--causal` passes
//! training's causal hints ([`Causal`]); either way two rates are printed: "TFLOP/s"
//! counts the full products (2 M N K a matrix), "needed TFLOP/s" only the causal
//! triangle's FLOPs (T (T + 1) / 2 instead of T^2 of each), the work a causal kernel
//! cannot avoid.

use super::bench::plan_desc;
use super::bench_timing::{random_values, time_passes};
use halfgrad::ops::matmul::{
    matmul_with, plan_for, Causal, MatmulArgs, MatmulKernel, MatmulOptions, MatmulTuning,
    MatrixLayout,
};
use halfgrad::{DType, Error, Gpu, Result, Tensor};
use std::process::ExitCode;

/// What `bench matmul --attention` runs.
pub struct AttentionBench {
    /// (batch, heads, tokens T, head width hd).
    pub dims: (usize, usize, usize, usize),
    /// Operand dtype, and C's for Y, dV, dQ and dK (S and dP are f32, as in training).
    pub dtype: DType,
    pub kernel: MatmulKernel,
    pub tuning: MatmulTuning,
    pub warmup: usize,
    pub iters: usize,
    pub check: bool,
    /// Pass each product's causal hint (as training does).
    pub causal: bool,
    pub json: bool,
    /// Relative-error bound of --check.
    pub tolerance: f64,
}

/// One operand: its host values (rounded to the tensor's dtype), the tensor and where its
/// matrices lie in it.
struct Operand<'a> {
    host: &'a [f32],
    tensor: &'a Tensor,
    layout: MatrixLayout,
}

/// One of the six products.
struct Product<'a> {
    name: &'static str,
    mnk: (usize, usize, usize),
    trans: (bool, bool),
    a: Operand<'a>,
    b: Operand<'a>,
    /// C's tensor and layout (its host values are read back for --check).
    c: (&'a Tensor, MatrixLayout),
    /// The causal hint training passes (used with --causal; its triangle counts the
    /// needed FLOPs either way).
    hint: Causal,
}

/// Parses `B,H,T,HD`.
pub fn parse_attention(s: &str) -> std::result::Result<(usize, usize, usize, usize), String> {
    let parts: Vec<usize> = s
        .split(',')
        .map(|v| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}")))
        .collect::<std::result::Result<_, _>>()?;
    match parts[..] {
        [b, h, t, hd] if b > 0 && h > 0 && t > 0 && hd > 0 => Ok((b, h, t, hd)),
        _ => Err(format!(
            "expected B,H,T,HD (batch, heads, tokens, head width; all >= 1) such as 8,12,1024,64, got {s:?}"
        )),
    }
}

pub fn run_attention(gpu: &Gpu, bench: &AttentionBench) -> Result<ExitCode> {
    let (bsz, heads, t, hd) = bench.dims;
    let c = heads
        .checked_mul(hd)
        .ok_or_else(|| Error::InvalidArgument("--attention: H x HD overflows".into()))?;
    let len = |parts: &[usize]| {
        parts
            .iter()
            .try_fold(1usize, |acc, &x| acc.checked_mul(x))
            .ok_or_else(|| Error::InvalidArgument("--attention: a tensor size overflows".into()))
    };
    let (qkv_len, rows_len, square_len) = (
        len(&[bsz, t, 3, c])?,
        len(&[bsz, t, c])?,
        len(&[bsz, heads, t, t])?,
    );
    let dt = bench.dtype;
    let host = |n: usize, seed: u64| -> Vec<f32> {
        random_values(n, seed)
            .into_iter()
            .map(|x| dt.round(x))
            .collect()
    };
    // Zero above the diagonal of every (T, T) matrix, as the softmax kernels write P, dS.
    let causal_rows = |mut v: Vec<f32>| {
        for (e, x) in v.iter_mut().enumerate() {
            if e % t > (e / t) % t {
                *x = 0.0;
            }
        }
        v
    };
    // qkv: (B*T, 3C); p, ds: (B, H, T, T) lower-triangular; dy: (B*T, C); all of the
    // operand dtype.
    let (qkv_host, p_host, dy_host, ds_host) = (
        host(qkv_len, 11),
        causal_rows(host(square_len, 12)),
        host(rows_len, 13),
        causal_rows(host(square_len, 14)),
    );
    let qkv = Tensor::from_f32(gpu, &[qkv_len], &qkv_host, dt)?;
    let p = Tensor::from_f32(gpu, &[square_len], &p_host, dt)?;
    let dy = Tensor::from_f32(gpu, &[rows_len], &dy_host, dt)?;
    let ds = Tensor::from_f32(gpu, &[square_len], &ds_host, dt)?;
    // Outputs: the f32 scores (S, then dP), y (B*T, C) and dqkv (B*T, 3C).
    let scores = Tensor::empty(gpu, &[square_len], DType::F32)?;
    let y = Tensor::empty(gpu, &[rows_len], dt)?;
    let dqkv = Tensor::empty(gpu, &[qkv_len], dt)?;

    // Head h of Q (part 0), K (1) or V (2): (T, hd) at column part*C + h*hd, rows 3C apart.
    let qkv_part = |part: usize| MatrixLayout {
        offset: part * c,
        ld: 3 * c,
        outer_stride: t * 3 * c,
        inner_stride: hd,
    };
    // Head h of y / dy: (T, hd) at column h*hd, rows C apart.
    let heads_of = MatrixLayout {
        offset: 0,
        ld: c,
        outer_stride: t * c,
        inner_stride: hd,
    };
    let square = MatrixLayout::dense_batch(t, t, heads);
    let op = |host, tensor, layout| Operand {
        host,
        tensor,
        layout,
    };
    let products = [
        Product {
            name: "S = Q K^T",
            mnk: (t, t, hd),
            trans: (false, true),
            a: op(&qkv_host, &qkv, qkv_part(0)),
            b: op(&qkv_host, &qkv, qkv_part(1)),
            c: (&scores, square),
            hint: Causal::SkipAboveDiagonal,
        },
        Product {
            name: "Y = P V",
            mnk: (t, hd, t),
            trans: (false, false),
            a: op(&p_host, &p, square),
            b: op(&qkv_host, &qkv, qkv_part(2)),
            c: (&y, heads_of),
            hint: Causal::LowerA,
        },
        Product {
            name: "dV = P^T dY",
            mnk: (t, hd, t),
            trans: (true, false),
            a: op(&p_host, &p, square),
            b: op(&dy_host, &dy, heads_of),
            c: (&dqkv, qkv_part(2)),
            hint: Causal::UpperA,
        },
        Product {
            name: "dP = dY V^T",
            mnk: (t, t, hd),
            trans: (false, true),
            a: op(&dy_host, &dy, heads_of),
            b: op(&qkv_host, &qkv, qkv_part(2)),
            c: (&scores, square),
            hint: Causal::SkipAboveDiagonal,
        },
        Product {
            name: "dQ = dS K",
            mnk: (t, hd, t),
            trans: (false, false),
            a: op(&ds_host, &ds, square),
            b: op(&qkv_host, &qkv, qkv_part(1)),
            c: (&dqkv, qkv_part(0)),
            hint: Causal::LowerA,
        },
        Product {
            name: "dK = dS^T Q",
            mnk: (t, hd, t),
            trans: (true, false),
            a: op(&ds_host, &ds, square),
            b: op(&qkv_host, &qkv, qkv_part(0)),
            c: (&dqkv, qkv_part(1)),
            hint: Causal::UpperA,
        },
    ];

    let facts = gpu.adapter();
    if !bench.json {
        println!("adapter  {} ({})", facts.name, facts.backend);
        println!(
            "attention B={bsz} H={heads} T={t} hd={hd}  {dt} operands (S, dP into f32; Y, dV, dQ, dK into {dt}); causal hints {}",
            if bench.causal { "on" } else { "off" }
        );
        println!(
            "{:<12} {:>18}  {:<12} {:<11} {:<9} {:<19} {:>9} {:>9} {:>14}  check",
            "product",
            "M x N x K",
            "kernel",
            "tile",
            "epilogue",
            "hint",
            "ms",
            "TFLOP/s",
            "needed TFLOP/s"
        );
    }
    let mut rows = Vec::new();
    let (mut total_ms, mut total_flop, mut total_needed, mut passed) = (0.0, 0.0, 0.0, true);
    for pr in &products {
        let (m, n, k) = pr.mnk;
        let hint = if bench.causal { pr.hint } else { Causal::None };
        let args = MatmulArgs {
            causal: hint,
            a_layout: pr.a.layout,
            b_layout: pr.b.layout,
            c_layout: pr.c.1,
            batch: (bsz, heads),
            opts: MatmulOptions {
                trans_a: pr.trans.0,
                trans_b: pr.trans.1,
                accumulate: false,
                kernel: bench.kernel,
            },
            tuning: bench.tuning,
            ..MatmulArgs::new(pr.a.tensor, pr.b.tensor, pr.c.0, pr.mnk)
        };
        let plan = plan_for(gpu, &args)?;
        let dispatches = matmul_with(gpu, &args)?;
        let (tile, epilogue) = plan_desc(&plan);
        let timing = time_passes(gpu, bench.warmup, bench.iters, |pass, _| {
            dispatches.iter().for_each(|d| d.encode(pass))
        })?;
        let ms = timing.median_ms();
        let flop = 2.0 * (bsz * heads) as f64 * m as f64 * n as f64 * k as f64;
        let needed = 2.0 * (bsz * heads) as f64 * pr.hint.needed_macs(pr.mnk);
        let tflops = flop / (ms * 1e-3) / 1e12;
        let needed_tflops = needed / (ms * 1e-3) / 1e12;
        total_ms += ms;
        total_flop += flop;
        total_needed += needed;
        let check = if bench.check {
            gpu.run_all(&dispatches)?;
            let out = pr.c.0.to_f32_vec()?;
            Some(check_strided(pr, &out, (bsz, heads), hint))
        } else {
            None
        };
        let ok = check.is_none_or(|(err, _)| err <= bench.tolerance);
        passed &= ok;
        if bench.json {
            let mut row = serde_json::json!({
                "product": pr.name,
                "m": m,
                "n": n,
                "k": k,
                "trans_a": pr.trans.0,
                "trans_b": pr.trans.1,
                "out_dtype": pr.c.0.dtype().name(),
                "kernel": plan.name(),
                "coop_tile": tile,
                "coop_epilogue": epilogue,
                "causal": hint.name(),
                "ms": ms,
                "tflops": tflops,
                "needed_tflops": needed_tflops,
                "timing": timing.method,
            });
            if let Some((err, checked)) = check {
                row["rel_err"] = serde_json::json!(err);
                row["checked_rows"] = serde_json::json!(checked);
                row["passed"] = serde_json::json!(ok);
            }
            rows.push(row);
        } else {
            let check_desc = match check {
                Some((err, checked)) => format!(
                    "rel err {err:.2e} over {checked} rows: {}",
                    if ok { "ok" } else { "FAILED" }
                ),
                None => "-".into(),
            };
            println!(
                "{:<12} {:>18}  {:<12} {:<11} {:<9} {:<19} {ms:>9.4} {tflops:>9.3} {needed_tflops:>14.3}  {check_desc}",
                pr.name,
                format!("{m} x {n} x {k}"),
                plan.name(),
                tile,
                epilogue,
                hint.name()
            );
        }
    }
    let total_tflops = total_flop / (total_ms * 1e-3) / 1e12;
    let total_needed_tflops = total_needed / (total_ms * 1e-3) / 1e12;
    if bench.json {
        let mut obj = serde_json::json!({
            "bench": "matmul_attention",
            "batch": bsz,
            "heads": heads,
            "t": t,
            "hd": hd,
            "dtype": dt.name(),
            "products": rows,
            "causal": bench.causal,
            "total_ms": total_ms,
            "tflops": total_tflops,
            "needed_tflops": total_needed_tflops,
            "adapter": facts.name,
            "backend": facts.backend,
        });
        if bench.check {
            obj["tolerance"] = serde_json::json!(bench.tolerance);
            obj["passed"] = serde_json::json!(passed);
        }
        println!("{obj}");
    } else {
        println!(
            "total    {total_ms:.4} ms for the six products, {total_tflops:.3} TFLOP/s counting full products, {total_needed_tflops:.3} needed TFLOP/s counting the causal triangle only (medians of {} runs each)",
            bench.iters.max(1)
        );
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// ||C - ref|| / ||ref|| over up to 8 evenly spaced rows of every matrix of the batch,
/// the reference in f64 through each operand's layout; with `Causal::SkipAboveDiagonal`
/// only the entries on and below the diagonal (the others are unspecified). Returns
/// (error, rows).
fn check_strided(
    pr: &Product,
    out: &[f32],
    (outer, inner): (usize, usize),
    hint: Causal,
) -> (f64, usize) {
    let (m, n, k) = pr.mnk;
    let (a_cols, b_cols) = (
        if pr.trans.0 { m } else { k },
        if pr.trans.1 { k } else { n },
    );
    let at = |l: &MatrixLayout, (o, i): (usize, usize), r: usize, col: usize, cols: usize| {
        let ld = if l.ld == 0 { cols } else { l.ld };
        l.offset + o * l.outer_stride + i * l.inner_stride + r * ld + col
    };
    let rows: Vec<usize> = if m <= 8 {
        (0..m).collect()
    } else {
        (0..8).map(|r| r * (m - 1) / 7).collect()
    };
    let (mut num, mut den, mut checked) = (0.0f64, 0.0f64, 0);
    for o in 0..outer {
        for i in 0..inner {
            for &row in &rows {
                checked += 1;
                let cols = if hint == Causal::SkipAboveDiagonal {
                    n.min(row + 1)
                } else {
                    n
                };
                for col in 0..cols {
                    let mut sum = 0.0f64;
                    for q in 0..k {
                        let ai = if pr.trans.0 {
                            at(&pr.a.layout, (o, i), q, row, a_cols)
                        } else {
                            at(&pr.a.layout, (o, i), row, q, a_cols)
                        };
                        let bi = if pr.trans.1 {
                            at(&pr.b.layout, (o, i), col, q, b_cols)
                        } else {
                            at(&pr.b.layout, (o, i), q, col, b_cols)
                        };
                        sum += f64::from(pr.a.host[ai]) * f64::from(pr.b.host[bi]);
                    }
                    let got = f64::from(out[at(&pr.c.1, (o, i), row, col, n)]);
                    num += if got.is_finite() {
                        (got - sum).powi(2)
                    } else {
                        f64::INFINITY
                    };
                    den += sum * sum;
                }
            }
        }
    }
    let err = if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    };
    (err, checked)
}
