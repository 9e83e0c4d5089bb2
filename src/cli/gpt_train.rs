//! `halfgrad gpt train`: trains a byte-level GPT-2 on a text (the shipped King James Bible
//! by default), with periodic evaluation, samples and saves. It stops cleanly on Ctrl-C or
//! SIGTERM (cli/interrupt.rs) and recovers from a lost GPU in every phase
//! (cli/recover.rs), as `halfgrad train` does.

use super::interrupt::{self, Interrupts, StopSignal};
use super::recover::{Phase, Recovery, Start};
use super::report::{overflow_json, overflow_suffix, overflow_summary, Output};
use super::schedule::ScheduleEndArgs;
use halfgrad::amp::Precision;
use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::text::{Split, TextData};
use halfgrad::nn::gpt::{hf, GptConfig, GptPreset, GptWeights, SampleConfig};
use halfgrad::nn::DeviceBudget;
use halfgrad::train::{
    GptEvaluation, GptTrainConfig, GptTrainer, LrSchedule, MemoryReport, TrainStats,
};
use halfgrad::{Error, Gpu, Result};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Statistics are read every this many steps (each read waits for the GPU).
const STATS_EVERY: u64 = 10;

/// Steps of a new run without --steps.
const DEFAULT_STEPS: u64 = 600;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Train on this file's bytes (the last 10% is validation) [default: the shipped
    /// King James Bible, data/kjv.txt].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Model preset: tiny (the default: minutes on a CPU adapter) or shakespeare-char
    /// (nanoGPT's size, for real GPUs). --layers, --heads, --embd, --block override it.
    #[arg(long)]
    preset: Option<String>,
    /// Precision of activations and matrix products: f32, f16 or bf16 [default: f16].
    #[arg(long)]
    precision: Option<Precision>,
    /// Transformer blocks.
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads (must divide --embd).
    #[arg(long)]
    heads: Option<usize>,
    /// Width of the residual stream.
    #[arg(long)]
    embd: Option<usize>,
    /// Context length (tokens per sequence).
    #[arg(long)]
    block: Option<usize>,
    /// Sequences per step [default: the preset's].
    #[arg(long)]
    batch: Option<usize>,
    /// Train until this many steps in total; the schedule spans them (a resumed run
    /// continues from its step) [default: 600, or the checkpoint's].
    #[arg(long)]
    steps: Option<u64>,
    /// Stop after this many steps of this invocation (save with --checkpoint, continue
    /// with --resume); the schedule still spans --steps.
    #[arg(long)]
    stop_after: Option<u64>,
    #[command(flatten)]
    schedule_end: ScheduleEndArgs,
    /// AdamW peak learning rate [default: the preset's: 6e-3 for tiny, 1e-3 for
    /// shakespeare-char].
    #[arg(long)]
    lr: Option<f32>,
    /// Warmup steps of the cosine schedule [default: min(100, steps / 10)].
    #[arg(long)]
    warmup: Option<u64>,
    /// AdamW decoupled weight decay [default: 0].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Seed of the initialisation, the batch order and the samples [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Evaluate (validation loss and a sample) every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Validation windows per evaluation, evenly spaced over the validation bytes
    /// (0: all of them).
    #[arg(long, default_value_t = 64)]
    eval_windows: usize,
    /// Bytes generated at each evaluation (0: no sample).
    #[arg(long, default_value_t = 200)]
    sample_tokens: usize,
    /// Save the state to this safetensors file at the end (and on an error, and every
    /// --save-every steps).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Also save every N steps (0: only at the end). Needs --checkpoint.
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Continue the run saved in this checkpoint (bit-exact: weights, Adam moments,
    /// scaler and data position).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Start from a Hugging Face GPT-2 folder (config.json + model.safetensors), e.g.
    /// one `halfgrad gpt export` wrote: fine-tuning.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Print one JSON object at the end instead of the text summary (no progress bar).
    #[arg(long)]
    json: bool,
    /// Print the memory held per role in f32, f16 and bf16 before training.
    #[arg(long)]
    memory: bool,
}

impl TrainArgs {
    /// The model: the preset (or `base`, a checkpoint's or an --init folder's) with the
    /// size options given applied.
    fn model(&self, base: GptConfig) -> GptConfig {
        GptConfig {
            vocab: base.vocab,
            block: self.block.unwrap_or(base.block),
            n_layer: self.layers.unwrap_or(base.n_layer),
            n_head: self.heads.unwrap_or(base.n_head),
            n_embd: self.embd.unwrap_or(base.n_embd),
        }
    }

    /// A new run's settings.
    fn new_config(&self, base_model: GptConfig, preset: &GptPreset) -> GptTrainConfig {
        let steps = self.steps.unwrap_or(DEFAULT_STEPS);
        let mut c = GptTrainConfig::tiny(steps);
        c.model = self.model(base_model);
        c.batch = self.batch.unwrap_or(preset.batch);
        c.lr = preset.lr;
        if let Some(p) = self.precision {
            c.precision = p;
        }
        if let Some(lr) = self.lr {
            c.lr = lr;
        }
        if let Some(w) = self.weight_decay {
            c.weight_decay = w;
        }
        if let Some(s) = self.seed {
            c.seed = s;
        }
        c.schedule = LrSchedule::WarmupCosine {
            warmup: self.warmup.unwrap_or((steps / 10).min(100)),
            total: steps,
        };
        c.eval_windows = self.eval_windows;
        c
    }
}

/// Refuses a resumed run's option that differs from the checkpoint's setting.
fn ensure_same<T: PartialEq + std::fmt::Display>(
    what: &str,
    saved: T,
    asked: Option<T>,
    origin: &str,
) -> Result<()> {
    match asked {
        Some(a) if a != saved => Err(Error::Checkpoint {
            path: origin.to_string(),
            message: format!(
                "{what} mismatch: the checkpoint was trained with {saved}, this run asks for {a} \
                 (omit the option to continue with the checkpoint's value)"
            ),
        }),
        _ => Ok(()),
    }
}

fn load_text(path: Option<&Path>, block: usize) -> Result<TextData> {
    match path {
        Some(p) => TextData::load(p, block),
        None => TextData::kjv(block),
    }
}

fn resume(gpu: &Gpu, path: &Path, args: &TrainArgs) -> Result<(GptTrainer, TextData)> {
    let ck = Checkpoint::load(path)?;
    let saved = GptTrainer::config_of(&ck)?;
    let origin = ck.origin().to_string();
    let m = saved.model;
    ensure_same("layers", m.n_layer, args.layers, &origin)?;
    ensure_same("heads", m.n_head, args.heads, &origin)?;
    ensure_same("embd", m.n_embd, args.embd, &origin)?;
    ensure_same("block", m.block, args.block, &origin)?;
    ensure_same("batch", saved.batch, args.batch, &origin)?;
    ensure_same("precision", saved.precision, args.precision, &origin)?;
    ensure_same("seed", saved.seed, args.seed, &origin)?;
    ensure_same("lr", saved.lr, args.lr, &origin)?;
    if args.init.is_some() {
        return Err(Error::InvalidArgument(
            "--init and --resume exclude each other".into(),
        ));
    }
    if let LrSchedule::WarmupCosine { total, .. } = saved.schedule {
        // More steps than the schedule spans: train() asks what was meant.
        ensure_same("steps", total, args.steps.filter(|&s| s < total), &origin)?;
    }
    let data = load_text(args.data.as_deref(), m.block)?;
    let trained_on = GptTrainer::data_len_of(&ck)?;
    if trained_on != data.len() {
        return Err(Error::Checkpoint {
            path: origin,
            message: format!(
                "trained on a text of {trained_on} bytes; {} has {} (pass the same --data)",
                data.name(),
                data.len()
            ),
        });
    }
    let trainer = pollster::block_on(GptTrainer::from_checkpoint(gpu, &ck))?;
    Ok((trainer, data))
}

/// A new run, and its `--init` weights (kept to rebuild the start after a device loss).
fn fresh(gpu: &Gpu, args: &TrainArgs) -> Result<(GptTrainer, TextData, Option<GptWeights>)> {
    let (config, init) = fresh_config(args)?;
    let data = load_text(args.data.as_deref(), config.model.block)?;
    let trainer = GptTrainer::new(gpu, config, init.as_ref())?;
    Ok((trainer, data, init))
}

/// A fresh run's settings (and the `--init` weights), before any device work.
fn fresh_config(args: &TrainArgs) -> Result<(GptTrainConfig, Option<GptWeights>)> {
    let preset = GptConfig::preset(args.preset.as_deref().unwrap_or("tiny"))?;
    let (config, init) = match &args.init {
        Some(dir) => {
            let weights = hf::load(dir)?;
            let base = *weights.config();
            let origin = dir.display().to_string();
            for (what, saved, asked) in [
                ("layers", base.n_layer, args.layers),
                ("heads", base.n_head, args.heads),
                ("embd", base.n_embd, args.embd),
            ] {
                ensure_same(what, saved, asked, &origin)?;
            }
            // A shorter context keeps the first position rows; a longer one is refused.
            let block = args.block.unwrap_or(base.block);
            let weights = weights.with_block(block).map_err(|e| Error::Checkpoint {
                path: origin.clone(),
                message: e.to_string(),
            })?;
            (args.new_config(*weights.config(), &preset), Some(weights))
        }
        None => (args.new_config(preset.config, &preset), None),
    };
    config.validate()?;
    Ok((config, init))
}

/// Runs `halfgrad gpt train`: `--memory` prints the size plan; otherwise a fresh or resumed run
/// through its phases (steps, evaluations, samples, saves) until the schedule ends or a signal
/// stops it.
pub fn train(args: TrainArgs) -> Result<ExitCode> {
    if args.save_every > 0 && args.checkpoint.is_none() {
        return Err(Error::InvalidArgument(
            "--save-every needs --checkpoint PATH".into(),
        ));
    }
    args.schedule_end.check(args.resume.is_some())?;
    let started = Instant::now();
    let gpu = Gpu::new_blocking()?;
    if args.memory {
        return print_plan(&gpu, &args);
    }
    let (mut trainer, data, init) = match &args.resume {
        Some(path) => {
            let (trainer, data) = resume(&gpu, path, &args)?;
            (trainer, data, None)
        }
        None => fresh(&gpu, &args)?,
    };
    let out = Output { json: args.json };
    // The end of the schedule: what --steps asked for (checked against a checkpoint).
    let mut steps = match trainer.config().schedule {
        LrSchedule::WarmupCosine { total, .. } => total,
        LrSchedule::Constant => args.steps.unwrap_or(DEFAULT_STEPS),
    };
    if let (Some(path), Some(asked)) = (&args.resume, args.steps) {
        let schedule = trainer.config().schedule;
        let resolved = args
            .schedule_end
            .resolve(schedule, trainer.steps(), asked, path)?;
        if let Some(longer) = resolved {
            trainer.set_schedule(longer)?;
        }
        steps = steps.max(asked);
    }
    out.gpt_header(
        &trainer,
        &data,
        args.resume.as_deref(),
        args.init.as_deref(),
        steps,
    );
    let bar = out.progress_bar(trainer.steps(), steps);
    let first_step = trainer.steps();
    let end = args
        .stop_after
        .map_or(steps, |k| first_step.saturating_add(k).min(steps));
    let start = {
        let config = trainer.config();
        Start::new(args.resume.as_deref(), move |gpu: &Gpu| {
            GptTrainer::new(gpu, config.clone(), init.as_ref())
        })
    };
    let mut recovery = Recovery::new(&trainer, start, args.checkpoint.as_deref())?;
    let how = SampleConfig::default();
    let interrupts = Interrupts::install();
    let run = Run {
        args: &args,
        end,
        data: &data,
        bar: &bar,
        out: &out,
        how: &how,
        interrupts: &interrupts,
    };
    let train_started = Instant::now();
    let mut seconds = 0.0;
    // Every phase (steps, evaluations, samples, saves, the final ones) runs inside this
    // loop, so a lost GPU anywhere is recovered from: a new device, the newest trusted
    // state, and the phases again from there (see recover.rs).
    let outcome = loop {
        let r = run
            .train_loop(&mut trainer, &mut recovery)
            .and_then(|stop| {
                seconds = train_started.elapsed().as_secs_f64();
                match stop {
                    Some(signal) => run
                        .save_now(&trainer, &mut recovery)
                        .map(|()| Outcome::Stopped(signal)),
                    None => run.finish(&mut trainer, &mut recovery).map(Outcome::Done),
                }
            });
        match r {
            Err(Error::DeviceLost(why)) => {
                match bar.suspend(|| recovery.recover(&why, &mut trainer)) {
                    Ok(line) => eprintln!("{line}"),
                    Err(e) => break Err(e),
                }
            }
            other => break other,
        }
    };
    bar.finish_and_clear();
    let done = match outcome {
        Ok(Outcome::Done(f)) => f,
        Ok(Outcome::Stopped(signal)) => {
            // Ctrl-C or SIGTERM: saved; say how to continue, exit 130 / 143.
            return Ok(interrupt::finish(
                signal,
                trainer.steps(),
                args.checkpoint.as_deref(),
                args.json,
                &["--init"],
            ));
        }
        Err(e) => {
            // No lost work: save what the GPU still holds (a lost device fails before
            // the file is touched), then report the error.
            if let Some(path) = &args.checkpoint {
                match trainer.save(path, &data) {
                    Ok(()) => eprintln!(
                        "saved the latest state (step {}) to {}",
                        trainer.steps(),
                        path.display()
                    ),
                    Err(e2) => eprintln!(
                        "could not save the latest state to {} ({e2}); {}",
                        path.display(),
                        recovery.on_disk()
                    ),
                }
            }
            return Err(e);
        }
    };
    let steps_run = trainer.steps() - first_step;
    let summary = Summary {
        trainer: &trainer,
        stats: done.stats,
        overflows: done.overflows,
        val_loss: done.eval.loss,
        eval_windows: done.eval.windows,
        seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        steps_run,
        sample: done.sample,
        checkpoint: args.checkpoint.as_deref(),
        data: &data,
        recovery: &recovery,
    };
    if args.json {
        println!("{}", summary.json());
    } else {
        print!("{}", summary.text());
    }
    // A signal during the final phase: the run is complete and saved; still report it.
    if let Some(signal) = interrupts.requested() {
        eprintln!(
            "{}: received after the last step; the run is complete",
            signal.name()
        );
        return Ok(ExitCode::from(signal.exit_code()));
    }
    Ok(ExitCode::SUCCESS)
}

/// How the loop of phases ended.
enum Outcome {
    Done(Final),
    Stopped(StopSignal),
}

/// The final phase's results.
struct Final {
    stats: TrainStats,
    /// Parameters whose gradients held an inf or NaN, with the number of steps.
    overflows: Vec<(String, u32)>,
    eval: GptEvaluation,
    sample: Option<String>,
}

/// What every phase of one run needs.
struct Run<'a> {
    args: &'a TrainArgs,
    /// The step this invocation trains to (--steps, or earlier with --stop-after).
    end: u64,
    data: &'a TextData,
    bar: &'a ProgressBar,
    out: &'a Output,
    how: &'a SampleConfig,
    interrupts: &'a Interrupts,
}

impl Run<'_> {
    /// Steps to `end` with the periodic statistics, evaluations, samples and saves.
    /// Stops early, before a step, when a signal asks (returning it).
    fn train_loop(
        &self,
        trainer: &mut GptTrainer,
        recovery: &mut Recovery<GptTrainer>,
    ) -> Result<Option<StopSignal>> {
        let (args, end, bar) = (self.args, self.end, self.bar);
        let mut window = (trainer.steps(), Instant::now());
        let tokens_per_step = trainer.tokens_per_step() as f64;
        while trainer.steps() < end {
            let stop = self
                .interrupts
                .stop_before_step(trainer.steps(), |line| bar.suspend(|| eprintln!("{line}")));
            if stop.is_some() {
                return Ok(stop);
            }
            recovery.before_step(trainer);
            trainer.step(self.data)?;
            let step = trainer.steps();
            let eval_now =
                args.eval_every > 0 && step.is_multiple_of(args.eval_every) && step < end;
            if step.is_multiple_of(STATS_EVERY) || step == end || eval_now {
                let (stats, overflows) = trainer.stats_and_overflows_blocking()?;
                let rate = (step - window.0) as f64 * tokens_per_step
                    / window.1.elapsed().as_secs_f64().max(1e-9);
                window = (step, Instant::now());
                bar.set_position(step);
                bar.set_message(stats_line(&stats, &overflows, rate));
                if eval_now {
                    recovery.before(Phase::Eval, trainer);
                    let eval = trainer.evaluate_blocking(self.data, Split::Validation)?;
                    let mut line = format!(
                        "step {step:>6}  {}  val loss {:.4}",
                        stats_line(&stats, &overflows, rate),
                        eval.loss
                    );
                    if let Some(bytes) = self.sample(trainer, recovery)? {
                        line.push_str(&format!("\n  sample: {}", sample_line(&bytes)));
                    }
                    bar.suspend(|| self.out.text(&line));
                    // Evaluation and sampling time is not training time.
                    window.1 = Instant::now();
                }
            }
            if let Some(path) = &args.checkpoint {
                if args.save_every > 0 && step.is_multiple_of(args.save_every) && step < end {
                    recovery.before(Phase::Save, trainer);
                    trainer.save(path, self.data)?;
                    recovery.saved(path, step);
                }
            }
        }
        Ok(None)
    }

    /// `--sample-tokens` bytes generated after a newline (none when 0), seeded by the
    /// run's seed: the same text for the same weights.
    fn sample(
        &self,
        trainer: &mut GptTrainer,
        recovery: &mut Recovery<GptTrainer>,
    ) -> Result<Option<Vec<u8>>> {
        if self.args.sample_tokens == 0 {
            return Ok(None);
        }
        recovery.before(Phase::Sample, trainer);
        let seed = trainer.config().seed;
        trainer
            .sample_blocking(b"\n", self.args.sample_tokens, self.how, seed)
            .map(Some)
    }

    /// After the last step: statistics, validation loss, a sample and the final save.
    fn finish(
        &self,
        trainer: &mut GptTrainer,
        recovery: &mut Recovery<GptTrainer>,
    ) -> Result<Final> {
        recovery.before(Phase::FinalEval, trainer);
        let (stats, overflows) = trainer.stats_and_overflows_blocking()?;
        let eval = trainer.evaluate_blocking(self.data, Split::Validation)?;
        let sample = self
            .sample(trainer, recovery)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        if let Some(path) = &self.args.checkpoint {
            recovery.before(Phase::FinalSave, trainer);
            trainer.save(path, self.data)?;
            recovery.saved(path, trainer.steps());
        }
        Ok(Final {
            stats,
            overflows,
            eval,
            sample,
        })
    }

    /// The save after a stop signal (when the run has a checkpoint path).
    fn save_now(&self, trainer: &GptTrainer, recovery: &mut Recovery<GptTrainer>) -> Result<()> {
        if let Some(path) = &self.args.checkpoint {
            interrupt::before_save(trainer.steps(), path);
            recovery.before(Phase::InterruptSave, trainer);
            trainer.save(path, self.data)?;
            recovery.saved(path, trainer.steps());
        }
        Ok(())
    }
}

/// A sample on one line: newlines shown as ` / `, control bytes as `?`.
fn sample_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace('\n', " / ")
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn stats_line(s: &TrainStats, overflows: &[(String, u32)], tokens_per_second: f64) -> String {
    let mut line = format!(
        "loss {:.4}  scale {}  skipped {}  {:.0} tokens/s",
        s.loss, s.loss_scale, s.skipped_steps, tokens_per_second
    );
    line.push_str(&overflow_suffix(overflows));
    line
}

/// `--memory`: the size plan of this run (parameters, Adam moments, the training and
/// evaluation graphs) in f32, f16 and bf16, per role and per layer against the adapter's
/// limits, computed without allocating or training. With `--resume`, the checkpoint's
/// settings.
fn print_plan(gpu: &Gpu, args: &TrainArgs) -> Result<ExitCode> {
    let config = match &args.resume {
        Some(path) => resume(gpu, path, args)?.0.config(),
        None => fresh_config(args)?.0,
    };
    let mut plans = Vec::new();
    for p in [Precision::F32, Precision::F16, Precision::BF16] {
        plans.push(GptTrainer::plan(&GptTrainConfig {
            precision: p,
            scaler: None,
            ..config.clone()
        })?);
    }
    let budget = DeviceBudget::of(gpu.caps(), gpu.adapter().device_type == "Cpu");
    let fits = GptTrainer::check_fits(gpu, &config);
    if args.json {
        let rows: Vec<serde_json::Value> = plans
            .iter()
            .map(|p| {
                let m = MemoryReport::from_plan(p);
                serde_json::json!({
                    "precision": p.policy.precision.to_string(),
                    "batch": p.batch,
                    "parameters": m.params,
                    "buffers": p.tensors.len(),
                    "total_bytes": p.total(),
                    "parameter_bytes": m.parameter_bytes(),
                    "activation_bytes": m.activation_bytes(),
                    "fits": p.check(&budget).is_ok(),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "memory_plan": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    let m = config.model;
    let s = |p: Precision| p.compute_dtype().size_bytes();
    print!("{}", MemoryReport::plan_table(&plans, &budget));
    println!(
        "attention keeps P (batch, heads, block, block) per layer: heads x block x bytes = {} B \
         per token per layer in 16 bits ({} in f32); the f32 scores and dS are scratch shared \
         by the layers; activation gradients share buffers once dead; group `eval` is what \
         the forward-only evaluation graph adds (its activations are the training graph's)",
        m.n_head * m.block * s(Precision::F16),
        m.n_head * m.block * s(Precision::F32)
    );
    match fits {
        Ok(()) => println!("{} (this run) fits; nothing was trained", config.precision),
        Err(e) => println!("{} (this run): {e}", config.precision),
    }
    Ok(ExitCode::SUCCESS)
}

impl Output {
    fn gpt_header(
        &self,
        t: &GptTrainer,
        data: &TextData,
        resumed: Option<&Path>,
        init: Option<&Path>,
        steps: u64,
    ) {
        let a = t.gpu().adapter();
        let c = t.config();
        let m = c.model;
        self.text(&format!(
            "adapter    {} ({}, {})\n\
             data       {}: {} bytes ({} train / {} validation), {} evaluation windows of {}\n\
             model      GPT {} layers, {} heads, width {}, block {}, vocab {}: {} parameters\n\
             training   {} steps, batch {} ({} tokens/step), AdamW lr {} ({}) betas {:?} weight decay {} \
             clip {}, seed {}{}{}\n\
             precision  {} (path: {})\n\
             policy     {}",
            a.name,
            a.backend,
            a.device_type,
            data.name(),
            data.len(),
            data.split_at(),
            data.len() - data.split_at(),
            t.eval_window_indices(data, Split::Validation).len(),
            m.block,
            m.n_layer,
            m.n_head,
            m.n_embd,
            m.block,
            m.vocab,
            t.num_params(),
            steps,
            c.batch,
            t.tokens_per_step(),
            c.lr,
            c.schedule,
            c.betas,
            c.weight_decay,
            c.max_grad_norm.map_or("off".to_string(), |m| format!("{m}")),
            c.seed,
            resumed.map_or(String::new(), |p| format!("\nresumed    {} at step {}", p.display(), t.steps())),
            init.map_or(String::new(), |p| format!("\ninit       {} (Hugging Face GPT-2)", p.display())),
            c.precision,
            t.describe_path(),
            t.policy()
        ));
    }
}

struct Summary<'a> {
    trainer: &'a GptTrainer,
    stats: TrainStats,
    /// Parameters whose gradients held an inf or NaN, with the number of steps.
    overflows: Vec<(String, u32)>,
    val_loss: f64,
    eval_windows: usize,
    seconds: f64,
    total_seconds: f64,
    steps_run: u64,
    sample: Option<String>,
    checkpoint: Option<&'a Path>,
    data: &'a TextData,
    recovery: &'a Recovery<'a, GptTrainer>,
}

impl Summary<'_> {
    fn tokens_per_second(&self) -> f64 {
        self.steps_run as f64 * self.trainer.tokens_per_step() as f64 / self.seconds.max(1e-9)
    }

    fn text(&self) -> String {
        let (t, s) = (self.trainer, &self.stats);
        let mut out = format!(
            "done       {} steps ({} this run) in {:.1} s, {:.0} tokens/s ({:.1} s in all)\n\
             result     train loss {:.4} (last batch), val loss {:.4} ({} windows)\n\
             scaler     loss scale {}, skipped steps {}, optimizer steps {}, grad norm {:.3}\n\
             precision  {} (path: {})\n\
             memory     {}\n",
            s.step,
            self.steps_run,
            self.seconds,
            self.tokens_per_second(),
            self.total_seconds,
            s.loss,
            self.val_loss,
            self.eval_windows,
            s.loss_scale,
            s.skipped_steps,
            s.optimizer_steps,
            s.grad_norm,
            t.config().precision,
            t.describe_path(),
            t.memory().summary_line(),
        );
        out.push_str(&overflow_summary(&self.overflows));
        if let Some(line) = self.recovery.summary() {
            out.push_str(&format!("recovery   {line}\n"));
        }
        if let Some(sample) = &self.sample {
            out.push_str(&format!(
                "sample     {}\n",
                sample.trim_end().replace('\n', "\n           ")
            ));
        }
        if let Some(p) = self.checkpoint {
            out.push_str(&format!("checkpoint {}\n", p.display()));
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let (t, s) = (self.trainer, &self.stats);
        let m = t.memory();
        let c = t.config();
        serde_json::json!({
            "precision": c.precision.to_string(),
            "path": t.describe_path(),
            "policy": t.policy().to_string(),
            "steps": s.step,
            "steps_this_run": self.steps_run,
            "device_losses": self.recovery.device_losses,
            "steps_redone": self.recovery.steps_redone,
            "train_loss": s.loss,
            "val_loss": self.val_loss,
            "eval_windows": self.eval_windows,
            "tokens_per_s": self.tokens_per_second(),
            "skipped_steps": s.skipped_steps,
            "nonfinite_steps": s.nonfinite_steps,
            "overflow_tensors": overflow_json(&self.overflows),
            "optimizer_steps": s.optimizer_steps,
            "loss_scale": s.loss_scale,
            "grad_norm": s.grad_norm,
            "parameters": t.num_params(),
            "seconds": self.seconds,
            "total_seconds": self.total_seconds,
            "adapter": t.gpu().adapter().name,
            "backend": t.gpu().adapter().backend,
            "model": c.model.to_string(),
            "batch": c.batch,
            "lr": c.lr,
            "schedule": c.schedule.to_string(),
            "seed": c.seed,
            "data": self.data.name(),
            "sample": self.sample,
            "memory": {
                "master_weights": m.master_weights,
                "low_copies": m.low_copies,
                "moments": m.moments,
                "grads": m.grads,
                "activations": m.activations,
                "activation_grads": m.activation_grads,
                "total": m.total(),
                "parameter_bytes_per_param": m.per_param(m.parameter_bytes()),
            },
            "checkpoint": self.checkpoint.map(|p| p.display().to_string()),
        })
    }
}
