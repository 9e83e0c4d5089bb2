//! A long F16 training run that watches the loss scaler (`cargo xtask long-run`).
//!
//! ```text
//! cargo run --release --example long_run -- [--steps 20000] [--growth-interval 50]
//!     [--hidden 32] [--batch 32] [--weights-every 1000] [--seed 0]
//! ```
//!
//! Trains a small MLP on the embedded digits in F16 with dynamic loss scaling and a short
//! growth interval, so the scale keeps probing upwards and backing off, and checks after
//! every step (one statistics readback each) that the scale stays within [1, 2^24], and
//! every `--weights-every` steps that no f32 master weight (nor any 16-bit copy) holds
//! NaN or inf. Reports the skipped-step rate, the scale's range, growths and backoffs,
//! a histogram of log2(scale) over the steps, throughput and the final test accuracy.
//! Exits non-zero if a check fails.

use halfgrad::amp::{Precision, ScalerConfig};
use halfgrad::data::Digits;
use halfgrad::nn::MlpOptions;
use halfgrad::train::{LrSchedule, TrainConfig, Trainer};
use halfgrad::Gpu;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

const SCALE_MIN: f32 = 1.0;
const SCALE_MAX: f32 = (1u32 << 24) as f32;

struct Args {
    steps: u64,
    growth_interval: u32,
    hidden: usize,
    batch: usize,
    weights_every: u64,
    seed: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        steps: 20_000,
        growth_interval: 50,
        hidden: 32,
        batch: 32,
        weights_every: 1000,
        seed: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let n = |v: &str| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{flag} {v}: {e}"))
        };
        match flag.as_str() {
            "--steps" => a.steps = n(&value)?,
            "--growth-interval" => a.growth_interval = n(&value)? as u32,
            "--hidden" => a.hidden = n(&value)? as usize,
            "--batch" => a.batch = n(&value)? as usize,
            "--weights-every" => a.weights_every = n(&value)?.max(1),
            "--seed" => a.seed = n(&value)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

/// Every f32 master weight and every 16-bit copy is finite (one readback per tensor).
fn weights_finite(t: &Trainer) -> halfgrad::Result<Result<(), String>> {
    for p in t.model().params() {
        if let Some(i) = p.master.to_f32_vec()?.iter().position(|v| !v.is_finite()) {
            return Ok(Err(format!(
                "master `{}` element {i} is not finite",
                p.name
            )));
        }
        if let Some(low) = &p.low {
            if let Some(i) = low.to_f32_vec()?.iter().position(|v| !v.is_finite()) {
                return Ok(Err(format!(
                    "16-bit copy of `{}` element {i} is not finite",
                    p.name
                )));
            }
        }
    }
    Ok(Ok(()))
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("long run: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, String> {
    let args = parse()?;
    let gpu = Gpu::new_blocking().map_err(|e| e.to_string())?;
    let (train, test) = Digits::load().map_err(|e| e.to_string())?;
    let config = TrainConfig {
        precision: Precision::F16,
        batch: args.batch,
        schedule: LrSchedule::WarmupCosine {
            warmup: 100,
            total: args.steps,
        },
        seed: args.seed,
        scaler: Some(ScalerConfig {
            growth_interval: args.growth_interval,
            ..TrainConfig::default_scaler(Precision::F16)
        }),
        ..TrainConfig::default()
    };
    let model = MlpOptions {
        hidden: vec![args.hidden],
        ..MlpOptions::default()
    };
    let mut t = Trainer::new_blocking(&gpu, config, &model, &train).map_err(|e| e.to_string())?;
    println!(
        "long run: {} F16 steps on {} ({}), MLP 64-{}-10, batch {}, growth interval {}, \
         init scale {}, statistics every step, weights every {} steps",
        args.steps,
        gpu.adapter().name,
        t.describe_path(),
        args.hidden,
        args.batch,
        args.growth_interval,
        t.config().scaler_config().init_scale,
        args.weights_every
    );
    println!("    step      loss        scale  skipped  growths  backoffs  steps/s");

    let err = |e: halfgrad::Error| e.to_string();
    let started = Instant::now();
    let mut window = (0u64, Instant::now());
    let mut failures = Vec::new();
    let (mut lo, mut hi) = (f32::INFINITY, 0.0f32);
    let (mut growths, mut backoffs, mut weight_checks) = (0u64, 0u64, 0u64);
    let mut prev = t.stats_blocking().map_err(err)?.loss_scale;
    let mut histogram: BTreeMap<i32, u64> = BTreeMap::new();
    let mut last = None;
    while t.steps() < args.steps {
        t.step_from(&train).map_err(err)?;
        let s = t.stats_blocking().map_err(err)?;
        let scale = s.loss_scale;
        lo = lo.min(scale);
        hi = hi.max(scale);
        growths += (scale > prev) as u64;
        backoffs += (scale < prev) as u64;
        prev = scale;
        *histogram.entry(scale.log2().floor() as i32).or_default() += 1;
        if !(SCALE_MIN..=SCALE_MAX).contains(&scale) && failures.len() < 10 {
            failures.push(format!(
                "step {}: loss scale {scale} outside [1, 2^24]",
                s.step
            ));
        }
        if s.step.is_multiple_of(args.weights_every) || s.step == args.steps {
            weight_checks += 1;
            if let Err(f) = weights_finite(&t).map_err(err)? {
                failures.push(format!("step {}: {f}", s.step));
            }
        }
        if s.step.is_multiple_of(2000) || s.step == args.steps {
            let rate = (s.step - window.0) as f64 / window.1.elapsed().as_secs_f64();
            window = (s.step, Instant::now());
            println!(
                "  {:>6}  {:>8.4}  {:>11}  {:>7}  {:>7}  {:>8}  {:>7.0}",
                s.step, s.loss, scale, s.skipped_steps, growths, backoffs, rate
            );
        }
        last = Some(s);
    }
    let seconds = started.elapsed().as_secs_f64();
    let s = last.ok_or("no step was taken")?;
    let eval = t.evaluate_blocking(&test).map_err(err)?;

    println!("log2(scale) histogram over the steps:");
    for (e, n) in &histogram {
        println!("  2^{e:<3} {n:>7} steps");
    }
    println!(
        "{} steps in {seconds:.1} s ({:.0} steps/s, a statistics readback after each)",
        s.step,
        s.step as f64 / seconds
    );
    println!(
        "skipped steps {} of {} ({:.3}%), non-finite {}; optimizer steps {}",
        s.skipped_steps,
        s.step,
        100.0 * s.skipped_steps as f64 / s.step as f64,
        s.nonfinite_steps,
        s.optimizer_steps
    );
    println!(
        "loss scale: min {lo}, max {hi}, final {}; {growths} growths, {backoffs} backoffs",
        s.loss_scale
    );
    println!(
        "master weights and 16-bit copies finite at all {weight_checks} checks: {}",
        if failures.iter().any(|f| f.contains("finite")) {
            "NO"
        } else {
            "yes"
        }
    );
    println!(
        "final train loss {:.4}, test loss {:.4}, test accuracy {:.2}% ({}/{})",
        s.loss,
        eval.loss,
        100.0 * eval.accuracy,
        eval.correct,
        eval.total
    );
    if s.skipped_steps != s.nonfinite_steps {
        failures.push("a non-finite step was not skipped".into());
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    println!(
        "long run: {}",
        if failures.is_empty() { "PASS" } else { "FAIL" }
    );
    Ok(failures.is_empty())
}
