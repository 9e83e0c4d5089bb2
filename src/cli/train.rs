//! `halfgrad train`: train the MLP classifier on the embedded digits or a CSV file (the
//! data options are in cli/data.rs), with a progress bar, periodic evaluation,
//! checkpoints, exact resume and a memory report. Ctrl-C or SIGTERM stops after the step
//! in flight, saves and prints the command that continues (cli/interrupt.rs); a lost GPU
//! in any phase is recovered from (cli/recover.rs); resuming past the end of the stored
//! learning-rate schedule asks which of two meanings was meant (--extend-schedule or
//! --keep-schedule).

use super::data::{DataArgs, Source};
use super::interrupt::{self, Interrupts, StopSignal};
use super::recover::{self, Phase, Recovery, Start};
use super::report::{overflow_json, overflow_suffix, overflow_summary, Output};
use super::schedule::ScheduleEndArgs;
use halfgrad::amp::Precision;
use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::{Dataset, InMemory};
use halfgrad::nn::{Activation, DeviceBudget, Mlp, MlpOptions};
use halfgrad::train::{Evaluation, LrSchedule, MemoryReport, TrainConfig, TrainStats, Trainer};
use halfgrad::{Error, Gpu, Result};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Statistics are read every this many steps (each read waits for the GPU).
const STATS_EVERY: u64 = 10;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Precision of activations and matrix products: f32, f16 or bf16 [default: f16].
    /// f16 uses shader-f16 where the adapter has it, else the packed path.
    #[arg(long)]
    precision: Option<Precision>,
    /// Train until this many steps in total (a resumed run continues from its step).
    #[arg(long, default_value_t = 1500)]
    steps: u64,
    #[command(flatten)]
    schedule_end: ScheduleEndArgs,
    /// Stop after this many steps of this invocation, as an interruption would (save with
    /// --checkpoint, continue later with --resume); the schedule still spans --steps.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Samples per step [default: 64, or all the training rows of a smaller --data file].
    #[arg(long)]
    batch: Option<usize>,
    /// AdamW learning rate [default: 3e-3].
    #[arg(long)]
    lr: Option<f32>,
    /// Hidden layer widths, comma-separated [default: 128,128].
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// Activation after each hidden layer: gelu or relu [default: gelu].
    #[arg(long)]
    activation: Option<Activation>,
    /// LayerNorm after each hidden layer: true or false [default: true].
    #[arg(long)]
    layer_norm: Option<bool>,
    /// Learning-rate schedule: `cosine` (warmup of min(50, steps/10) steps, then cosine
    /// decay to 0 at --steps) or `constant` [default: cosine].
    #[arg(long)]
    schedule: Option<ScheduleKind>,
    /// Std of the Gaussian noise added to training inputs (0: none) [default: 0.25].
    #[arg(long)]
    input_noise: Option<f32>,
    /// Seed of the initialisation, the batch order and the input noise [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Evaluate on the test set every N steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    eval_every: u64,
    /// Save the state to this safetensors file at the end (and on an error, and every
    /// --save-every steps).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Also save every N steps (0: only at the end). Needs --checkpoint.
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Continue the run saved in this checkpoint (settings not given here are taken from
    /// it; settings given must match it).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print one JSON object at the end instead of the text summary (no progress bar).
    #[arg(long)]
    json: bool,
    /// Print the memory held per role in f32, f16 and bf16 before training.
    #[arg(long)]
    memory: bool,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScheduleKind {
    Cosine,
    Constant,
}

impl ScheduleKind {
    fn for_steps(self, steps: u64) -> LrSchedule {
        match self {
            ScheduleKind::Constant => LrSchedule::Constant,
            ScheduleKind::Cosine => LrSchedule::WarmupCosine {
                warmup: (steps / 10).min(50),
                total: steps,
            },
        }
    }
}

impl TrainArgs {
    /// A new run's settings: the defaults with the options given, the schedule
    /// stretched over --steps.
    fn new_config(&self) -> TrainConfig {
        let mut config = self.apply(TrainConfig::default());
        if self.schedule.is_none() {
            let kind = match config.schedule {
                LrSchedule::Constant => ScheduleKind::Constant,
                LrSchedule::WarmupCosine { .. } => ScheduleKind::Cosine,
            };
            config.schedule = kind.for_steps(self.steps);
        }
        config
    }

    /// A new run's model: the default MLP with the options given.
    fn new_model(&self) -> MlpOptions {
        self.apply_model(MlpOptions::default())
    }

    /// `base` with every model option given on the command line applied.
    fn apply_model(&self, mut base: MlpOptions) -> MlpOptions {
        if let Some(h) = &self.hidden {
            base.hidden = h.clone();
        }
        if let Some(a) = self.activation {
            base.activation = a;
        }
        if let Some(l) = self.layer_norm {
            base.layer_norm = l;
        }
        base
    }

    /// `base` with every run setting given on the command line applied (the model's:
    /// [`TrainArgs::apply_model`]).
    fn apply(&self, mut base: TrainConfig) -> TrainConfig {
        if let Some(k) = self.schedule {
            base.schedule = k.for_steps(self.steps);
        }
        if let Some(n) = self.input_noise {
            base.input_noise = n;
        }
        if let Some(p) = self.precision {
            base.precision = p;
        }
        if let Some(b) = self.batch {
            base.batch = b;
        }
        if let Some(lr) = self.lr {
            base.lr = lr;
        }
        if let Some(s) = self.seed {
            base.seed = s;
        }
        base
    }
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    if args.save_every > 0 && args.checkpoint.is_none() {
        return Err(Error::InvalidArgument(
            "--save-every needs --checkpoint PATH".into(),
        ));
    }
    args.schedule_end.check(args.resume.is_some())?;
    let started = Instant::now();
    // Data first: a bad file is refused before a device is opened.
    let data = args.data.load(args.resume.as_deref())?;
    let gpu = Gpu::new_blocking()?;
    let (train, test, source) = (data.train, data.test, data.source);
    let train = recover::nan_sample_hook(train)?;
    if args.memory {
        return print_plan(&gpu, &args, &source, &train);
    }
    let (mut trainer, resumed, notes) = match &args.resume {
        Some(path) => {
            let (mut trainer, stretched) = resume(&gpu, path, &args, &train)?;
            let notes = schedule_end(&mut trainer, &args, path, stretched)?;
            (trainer, Some(path.clone()), notes)
        }
        None => {
            let config = source.fit_batch(args.new_config(), args.batch, &train);
            (
                Trainer::new_blocking(&gpu, config, &args.new_model(), &train)?,
                None,
                Vec::new(),
            )
        }
    };
    let out = Output { json: args.json };

    out.header(
        &trainer,
        &source,
        &train,
        &test,
        resumed.as_deref(),
        args.steps,
    );

    let bar = out.progress_bar(trainer.steps(), args.steps);
    let first_step = trainer.steps();
    let end = args
        .stop_after
        .map_or(args.steps, |k| first_step.saturating_add(k).min(args.steps));
    let start = {
        let (config, model, train) = (trainer.config().clone(), trainer.mlp_options()?, &train);
        Start::new(resumed.as_deref(), move |gpu: &Gpu| {
            Trainer::new_blocking(gpu, config.clone(), &model, train)
        })
    };
    let mut recovery = Recovery::new(&trainer, start, args.checkpoint.as_deref())?;
    let interrupts = Interrupts::install();
    let run = Run {
        args: &args,
        end,
        train: &train,
        test: &test,
        source: &source,
        bar: &bar,
        out: &out,
        interrupts: &interrupts,
    };
    let train_started = Instant::now();
    let mut seconds = 0.0;
    // Every phase (steps, evaluations, saves, the final ones) runs inside this loop, so a
    // lost GPU anywhere is recovered from: a new device, the newest trusted state, and
    // the phases again from there (see recover.rs).
    let outcome = loop {
        let r = run
            .train_loop(&mut trainer, &mut recovery, &notes)
            .and_then(|stop| {
                seconds = train_started.elapsed().as_secs_f64();
                match stop {
                    Some(signal) => run
                        .save_now(&trainer, &notes, &mut recovery)
                        .map(|()| Outcome::Stopped(signal)),
                    None => run
                        .finish(&mut trainer, &mut recovery, &notes)
                        .map(Outcome::Done),
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
    let final_state = match outcome {
        Ok(Outcome::Done(f)) => f,
        Ok(Outcome::Stopped(signal)) => {
            return Ok(interrupt::finish(
                signal,
                trainer.steps(),
                args.checkpoint.as_deref(),
                args.json,
                &[],
            ));
        }
        Err(e) => {
            // No lost work: save what the GPU still holds (a lost device fails before
            // the file is touched), then report the error.
            if let Some(path) = &args.checkpoint {
                match source.save(&trainer, path, &notes) {
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
    let Final {
        stats,
        overflows,
        eval,
        per_class,
    } = final_state;
    let steps_run = trainer.steps() - first_step;
    let summary = Summary {
        trainer: &trainer,
        stats,
        overflows,
        eval,
        seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        steps_run,
        checkpoint: args.checkpoint.as_deref(),
        resumed: resumed.as_deref(),
        recovery: &recovery,
    };
    if args.json {
        let mut json = summary.json();
        json["data"] = source.json(&train, &test);
        if let Some((_, classes)) = per_class {
            json["data"]["per_class"] = classes;
        }
        println!("{json}");
    } else {
        print!("{}", summary.text());
        if let Some((text, _)) = per_class {
            print!("{text}");
        }
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
    eval: Evaluation,
    per_class: Option<(String, serde_json::Value)>,
}

/// The metadata key recording where a resumed run stretched its schedule (appended to
/// on every stretch): `at step 25 from cosine:warmup=2,total=25`.
const STRETCHED_KEY: &str = "train.schedule.stretched";

/// A resumed run whose --steps go past the end of its stored cosine schedule: stretches
/// the schedule (--extend-schedule), keeps it (--keep-schedule), or refuses with both
/// meanings spelled out. Returns the metadata entries that record a stretch (`stretched`:
/// the checkpoint's earlier record).
fn schedule_end(
    trainer: &mut Trainer,
    args: &TrainArgs,
    ck: &Path,
    stretched: Option<String>,
) -> Result<Vec<(String, String)>> {
    let schedule = trainer.config().schedule;
    let step = trainer.steps();
    let Some(longer) = args.schedule_end.resolve(schedule, step, args.steps, ck)? else {
        return Ok(stretched
            .map(|s| (STRETCHED_KEY.to_string(), s))
            .into_iter()
            .collect());
    };
    trainer.set_schedule(longer)?;
    let entry = format!("at step {step} from {schedule}");
    let record = stretched.map_or(entry.clone(), |s| format!("{s}; {entry}"));
    Ok(vec![(STRETCHED_KEY.to_string(), record)])
}

/// Loads `path`, checks it against the options given and the data set. Also returns
/// the checkpoint's record of earlier schedule stretches.
fn resume(
    gpu: &Gpu,
    path: &Path,
    args: &TrainArgs,
    train: &InMemory,
) -> Result<(Trainer, Option<String>)> {
    let ck = Checkpoint::load(path)?;
    let stretched = ck.metadata.get(STRETCHED_KEY).cloned();
    let trainer = Trainer::from_checkpoint_blocking(gpu, &ck)?;
    let model = trainer.mlp_options()?;
    model.ensure_same(&args.apply_model(model.clone()), ck.origin())?;
    let saved = trainer.config().clone();
    saved.ensure_same(&args.apply(saved.clone()), ck.origin())?;
    let b = trainer.batcher_state();
    if trainer.features() != train.features()
        || trainer.classes() != train.classes()
        || b.len != train.len()
    {
        return Err(Error::Checkpoint {
            path: ck.origin().to_string(),
            message: format!(
                "trained on {} samples of {} features and {} classes; the digits training \
                 set has {} of {} and {}",
                b.len,
                trainer.features(),
                trainer.classes(),
                train.len(),
                train.features(),
                train.classes()
            ),
        });
    }
    Ok((trainer, stretched))
}

/// What every phase of one run needs.
struct Run<'a> {
    args: &'a TrainArgs,
    /// The step this invocation trains to (--steps, or earlier with --stop-after).
    end: u64,
    train: &'a InMemory,
    test: &'a InMemory,
    source: &'a Source,
    bar: &'a ProgressBar,
    out: &'a Output,
    interrupts: &'a Interrupts,
}

impl Run<'_> {
    /// Steps to `end` with the periodic statistics, evaluations and saves. Stops early,
    /// before a step, when a signal asks (returning it).
    fn train_loop(
        &self,
        trainer: &mut Trainer,
        recovery: &mut Recovery<Trainer>,
        notes: &[(String, String)],
    ) -> Result<Option<StopSignal>> {
        let (args, end, bar) = (self.args, self.end, self.bar);
        let mut window = (trainer.steps(), Instant::now());
        while trainer.steps() < end {
            let stop = self
                .interrupts
                .stop_before_step(trainer.steps(), |line| bar.suspend(|| eprintln!("{line}")));
            if stop.is_some() {
                return Ok(stop);
            }
            recovery.before_step(trainer);
            trainer.step_from(self.train)?;
            let step = trainer.steps();
            let eval_now = args.eval_every > 0 && step.is_multiple_of(args.eval_every);
            if step.is_multiple_of(STATS_EVERY) || step == end || eval_now {
                let (stats, overflows) = trainer.stats_and_overflows_blocking()?;
                let rate = (step - window.0) as f64 / window.1.elapsed().as_secs_f64().max(1e-9);
                window = (step, Instant::now());
                bar.set_position(step);
                bar.set_message(stats_line(&stats, &overflows, rate));
                if eval_now && step < end {
                    recovery.before(Phase::Eval, trainer);
                    let eval = trainer.evaluate_blocking(self.test)?;
                    bar.suspend(|| {
                        self.out.text(&format!(
                            "step {step:>6}  {}  eval loss {:.4} accuracy {:.2}%",
                            stats_line(&stats, &overflows, rate),
                            eval.loss,
                            100.0 * eval.accuracy
                        ))
                    });
                    // Evaluation time is not training time.
                    window.1 = Instant::now();
                }
            }
            if let Some(path) = &args.checkpoint {
                if args.save_every > 0 && step.is_multiple_of(args.save_every) && step < end {
                    recovery.before(Phase::Save, trainer);
                    self.source.save(trainer, path, notes)?;
                    recovery.saved(path, step);
                }
            }
        }
        Ok(None)
    }

    /// After the last step: statistics, test evaluation (per class for CSV data) and
    /// the final save.
    fn finish(
        &self,
        trainer: &mut Trainer,
        recovery: &mut Recovery<Trainer>,
        notes: &[(String, String)],
    ) -> Result<Final> {
        recovery.before(Phase::FinalEval, trainer);
        let (stats, overflows) = trainer.stats_and_overflows_blocking()?;
        let eval = trainer.evaluate_blocking(self.test)?;
        let per_class = self.source.per_class(trainer, self.test)?;
        if let Some(path) = &self.args.checkpoint {
            recovery.before(Phase::FinalSave, trainer);
            self.source.save(trainer, path, notes)?;
            recovery.saved(path, trainer.steps());
        }
        Ok(Final {
            stats,
            overflows,
            eval,
            per_class,
        })
    }

    /// The save after a stop signal (when the run has a checkpoint path).
    fn save_now(
        &self,
        trainer: &Trainer,
        notes: &[(String, String)],
        recovery: &mut Recovery<Trainer>,
    ) -> Result<()> {
        if let Some(path) = &self.args.checkpoint {
            interrupt::before_save(trainer.steps(), path);
            recovery.before(Phase::InterruptSave, trainer);
            self.source.save(trainer, path, notes)?;
            recovery.saved(path, trainer.steps());
        }
        Ok(())
    }
}

fn stats_line(s: &TrainStats, overflows: &[(String, u32)], steps_per_second: f64) -> String {
    let mut line = format!(
        "loss {:.4}  scale {}  skipped {}  {:.0} steps/s",
        s.loss, s.loss_scale, s.skipped_steps, steps_per_second
    );
    line.push_str(&overflow_suffix(overflows));
    line
}

/// `--memory`: the size plan of this run's model and batch in f32, f16 and bf16 (per
/// role and per layer, against the adapter's limits), computed without allocating or
/// training. With `--resume`, the checkpoint's settings.
fn print_plan(gpu: &Gpu, args: &TrainArgs, source: &Source, train: &InMemory) -> Result<ExitCode> {
    let (config, model) = match &args.resume {
        Some(path) => {
            let trainer = resume(gpu, path, args, train)?.0;
            (trainer.config().clone(), trainer.mlp_options()?)
        }
        None => (
            source.fit_batch(args.new_config(), args.batch, train),
            args.new_model(),
        ),
    };
    model.validate()?;
    let mlp = model.mlp_config(train.features(), train.classes());
    let mut plans = Vec::new();
    for p in [Precision::F32, Precision::F16, Precision::BF16] {
        let c = config.clone().with_precision(p);
        if let Some(plan) = Trainer::<Mlp>::plan(&c, &mlp)? {
            plans.push(plan);
        }
    }
    let budget = DeviceBudget::of(gpu.caps(), gpu.adapter().device_type == "Cpu");
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
    } else {
        print!("{}", MemoryReport::plan_table(&plans, &budget));
        let this = config.precision;
        if let Some(p) = plans.iter().find(|p| p.policy.precision == this) {
            if let Err(e) = Trainer::<Mlp>::check_fits(gpu, &config, &mlp) {
                println!("{this} (this run): {e}");
            } else {
                println!(
                    "{this} (this run) fits in {} buffers; nothing was trained",
                    p.tensors.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl Output {
    fn header(
        &self,
        t: &Trainer,
        source: &Source,
        train: &InMemory,
        test: &InMemory,
        resumed: Option<&Path>,
        steps: u64,
    ) {
        let a = t.gpu().adapter();
        let (c, m) = (t.config(), t.model().config());
        self.text(&format!(
            "adapter    {} ({}, {})\n\
             data       {}: {} train / {} test samples, {} features, {} classes{}\n\
             model      MLP {} ({}{}), {} parameters\n\
             training   {} steps, batch {}, AdamW lr {} ({}) weight decay {} clip {}, \
             input noise {}, seed {}{}\n\
             precision  {} (path: {})\n\
             policy     {}",
            a.name,
            a.backend,
            a.device_type,
            source.name(),
            train.len(),
            test.len(),
            train.features(),
            train.classes(),
            source.details().map_or(String::new(), |d| format!("\n{d}")),
            widths(&m.widths),
            m.activation,
            if m.layer_norm { ", layer norm" } else { "" },
            t.num_params(),
            steps,
            c.batch,
            c.lr,
            c.schedule,
            c.weight_decay,
            c.max_grad_norm
                .map_or("off".to_string(), |m| format!("{m}")),
            c.input_noise,
            c.seed,
            resumed.map_or(String::new(), |p| format!(
                "\nresumed    {} at step {}",
                p.display(),
                t.steps()
            )),
            c.precision,
            t.describe_path(),
            t.policy()
        ));
    }
}

fn widths(w: &[usize]) -> String {
    w.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

struct Summary<'a> {
    trainer: &'a Trainer,
    stats: TrainStats,
    /// Parameters whose gradients held an inf or NaN, with the number of steps.
    overflows: Vec<(String, u32)>,
    eval: Evaluation,
    /// Training loop time (steps, periodic evaluations and saves).
    seconds: f64,
    /// The whole command, device setup included.
    total_seconds: f64,
    steps_run: u64,
    checkpoint: Option<&'a Path>,
    resumed: Option<&'a Path>,
    recovery: &'a Recovery<'a, Trainer>,
}

impl Summary<'_> {
    fn steps_per_second(&self) -> f64 {
        self.steps_run as f64 / self.seconds.max(1e-9)
    }

    fn text(&self) -> String {
        let (t, s, e) = (self.trainer, &self.stats, &self.eval);
        let mut out = format!(
            "done       {} steps ({} this run) in {:.1} s, {:.0} steps/s ({:.1} s in all)\n\
             result     train loss {:.4} (last batch), test loss {:.4}, test accuracy {:.2}% \
             ({}/{})\n\
             scaler     loss scale {}, skipped steps {}, optimizer steps {}, grad norm {:.3}\n\
             precision  {} (path: {})\n\
             policy     {}\n\
             memory     {}\n",
            s.step,
            self.steps_run,
            self.seconds,
            self.steps_per_second(),
            self.total_seconds,
            s.loss,
            e.loss,
            100.0 * e.accuracy,
            e.correct,
            e.total,
            s.loss_scale,
            s.skipped_steps,
            s.optimizer_steps,
            s.grad_norm,
            t.config().precision,
            t.describe_path(),
            t.policy(),
            t.memory().summary_line(),
        );
        if let Some(note) = recover::skipped_note(s) {
            out.push_str(&format!("skipped    {note}\n"));
        }
        out.push_str(&overflow_summary(&self.overflows));
        if let Some(line) = self.recovery.summary() {
            out.push_str(&format!("recovery   {line}\n"));
        }
        if let Some(p) = self.checkpoint {
            out.push_str(&format!("checkpoint {}\n", p.display()));
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let (t, s, e) = (self.trainer, &self.stats, &self.eval);
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
            "eval_loss": e.loss,
            "eval_accuracy": e.accuracy,
            "eval_correct": e.correct,
            "eval_total": e.total,
            "skipped_steps": s.skipped_steps,
            "nonfinite_steps": s.nonfinite_steps,
            "overflow_tensors": overflow_json(&self.overflows),
            "optimizer_steps": s.optimizer_steps,
            "loss_scale": s.loss_scale,
            "grad_norm": s.grad_norm,
            "seconds": self.seconds,
            "total_seconds": self.total_seconds,
            "steps_per_second": self.steps_per_second(),
            "adapter": t.gpu().adapter().name,
            "backend": t.gpu().adapter().backend,
            "model": t.model().config().to_string(),
            "parameters": t.num_params(),
            "hidden": t.mlp_options().ok().map(|m| m.hidden),
            "batch": c.batch,
            "lr": c.lr,
            "schedule": c.schedule.to_string(),
            "input_noise": c.input_noise,
            "seed": c.seed,
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
            "resumed_from": self.resumed.map(|p| p.display().to_string()),
        })
    }
}
