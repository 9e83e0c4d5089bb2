//! `halfgrad train`: train the MLP classifier on the embedded digits or a CSV file (the
//! data options are in cli/data.rs), with a progress bar, periodic evaluation,
//! checkpoints, exact resume and a memory report.

use super::data::{DataArgs, Source};
use super::recover::{self, Recovery};
use halfgrad::amp::Precision;
use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::{Dataset, InMemory};
use halfgrad::nn::Activation;
use halfgrad::train::{Evaluation, LrSchedule, MemoryReport, TrainConfig, TrainStats, Trainer};
use halfgrad::{Error, Gpu, Result};
use indicatif::{ProgressBar, ProgressStyle};
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

    /// `base` with every setting given on the command line applied.
    fn apply(&self, mut base: TrainConfig) -> TrainConfig {
        if let Some(k) = self.schedule {
            base.schedule = k.for_steps(self.steps);
        }
        if let Some(n) = self.input_noise {
            base.input_noise = n;
        }
        if let Some(l) = self.layer_norm {
            base.layer_norm = l;
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
        if let Some(h) = &self.hidden {
            base.hidden = h.clone();
        }
        if let Some(a) = self.activation {
            base.activation = a;
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
    let started = Instant::now();
    // Data first: a bad file is refused before a device is opened.
    let data = args.data.load(args.resume.as_deref())?;
    let gpu = Gpu::new_blocking()?;
    let (train, test, source) = (data.train, data.test, data.source);
    let train = recover::nan_sample_hook(train)?;
    let (mut trainer, resumed) = match &args.resume {
        Some(path) => (resume(&gpu, path, &args, &train)?, Some(path.clone())),
        None => {
            let config = source.fit_batch(args.new_config(), args.batch, &train);
            (Trainer::new_blocking(&gpu, config, &train)?, None)
        }
    };
    let out = Output { json: args.json };

    if args.memory {
        out.text(&memory_table(&gpu, &trainer, &train)?);
    }
    out.header(
        &trainer,
        &source,
        &train,
        &test,
        resumed.as_deref(),
        args.steps,
    );
    if let LrSchedule::WarmupCosine { total, .. } = trainer.config().schedule {
        if args.steps > total {
            eprintln!(
                "note: the learning-rate schedule ends at step {total}; steps past it use lr 0"
            );
        }
    }

    let bar = out.progress_bar(trainer.steps(), args.steps);
    let first_step = trainer.steps();
    let end = args
        .stop_after
        .map_or(args.steps, |k| first_step.saturating_add(k).min(args.steps));
    let mut recovery = Recovery::new(&trainer, resumed.as_deref())?;
    let train_started = Instant::now();
    let trained = loop {
        let r = train_loop(
            &mut trainer,
            &args,
            end,
            &train,
            &test,
            &bar,
            &out,
            &mut recovery,
            &source,
        );
        match r {
            // A lost GPU: a new device, the newest trusted state, and on (see recover.rs).
            Err(Error::DeviceLost(why)) => {
                match bar.suspend(|| recovery.recover(&why, &mut trainer, &train)) {
                    Ok(line) => eprintln!("{line}"),
                    Err(e) => break Err(e),
                }
            }
            other => break other,
        }
    };
    bar.finish_and_clear();
    let seconds = train_started.elapsed().as_secs_f64();
    if let Err(e) = trained {
        // No lost work: save what the GPU still holds, then report the error.
        if let Some(path) = &args.checkpoint {
            match source.save(&trainer, path) {
                Ok(()) => eprintln!(
                    "saved the latest state (step {}) to {}",
                    trainer.steps(),
                    path.display()
                ),
                Err(e2) => eprintln!(
                    "could not save the latest state to {} ({e2}); the last periodic save \
                     is the newest",
                    path.display()
                ),
            }
        }
        return Err(e);
    }

    let stats = trainer.stats_blocking()?;
    let eval = trainer.evaluate_blocking(&test)?;
    if let Some(path) = &args.checkpoint {
        source.save(&trainer, path)?;
    }
    let per_class = source.per_class(&trainer, &test)?;
    let steps_run = trainer.steps() - first_step;
    let summary = Summary {
        trainer: &trainer,
        stats,
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
    Ok(ExitCode::SUCCESS)
}

/// Loads `path`, checks it against the options given and the data set.
fn resume(gpu: &Gpu, path: &Path, args: &TrainArgs, train: &InMemory) -> Result<Trainer> {
    let ck = Checkpoint::load(path)?;
    let trainer = Trainer::from_checkpoint_blocking(gpu, &ck)?;
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
    Ok(trainer)
}

#[allow(clippy::too_many_arguments)]
fn train_loop(
    trainer: &mut Trainer,
    args: &TrainArgs,
    end: u64,
    train: &InMemory,
    test: &InMemory,
    bar: &ProgressBar,
    out: &Output,
    recovery: &mut Recovery,
    source: &Source,
) -> Result<()> {
    let mut window = (trainer.steps(), Instant::now());
    while trainer.steps() < end {
        recovery.before_step(trainer);
        trainer.step_from(train)?;
        let step = trainer.steps();
        let eval_now = args.eval_every > 0 && step.is_multiple_of(args.eval_every);
        if step.is_multiple_of(STATS_EVERY) || step == end || eval_now {
            let stats = trainer.stats_blocking()?;
            let rate = (step - window.0) as f64 / window.1.elapsed().as_secs_f64().max(1e-9);
            window = (step, Instant::now());
            bar.set_position(step);
            bar.set_message(stats_line(&stats, rate));
            if eval_now && step < end {
                let eval = trainer.evaluate_blocking(test)?;
                bar.suspend(|| {
                    out.text(&format!(
                        "step {step:>6}  {}  eval loss {:.4} accuracy {:.2}%",
                        stats_line(&stats, rate),
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
                source.save(trainer, path)?;
                recovery.saved(path, step);
            }
        }
    }
    Ok(())
}

fn stats_line(s: &TrainStats, steps_per_second: f64) -> String {
    format!(
        "loss {:.4}  scale {}  skipped {}  {:.0} steps/s",
        s.loss, s.loss_scale, s.skipped_steps, steps_per_second
    )
}

/// The memory table in f32, f16 and bf16: this trainer's numbers for its precision,
/// fresh trainers (built, not trained) for the others.
fn memory_table(gpu: &Gpu, trainer: &Trainer, train: &InMemory) -> Result<String> {
    let mut reports = Vec::new();
    for p in [Precision::F32, Precision::F16, Precision::BF16] {
        if p == trainer.config().precision {
            reports.push(trainer.memory());
        } else {
            let config = trainer.config().clone().with_precision(p);
            reports.push(Trainer::new_blocking(gpu, config, train)?.memory());
        }
    }
    Ok(MemoryReport::table(&reports))
}

/// Where text goes: nowhere with --json (stdout carries the JSON object only).
struct Output {
    json: bool,
}

impl Output {
    fn text(&self, s: &str) {
        if !self.json {
            println!("{}", s.trim_end());
        }
    }

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
        let c = t.config();
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
            widths(&t.model().config().widths),
            c.activation,
            if c.layer_norm { ", layer norm" } else { "" },
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

    fn progress_bar(&self, position: u64, total: u64) -> ProgressBar {
        if self.json {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total.max(position));
        bar.set_position(position);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos:>6}/{len} {elapsed_precise} {msg}")
        {
            bar.set_style(style);
        }
        bar
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
    eval: Evaluation,
    /// Training loop time (steps, periodic evaluations and saves).
    seconds: f64,
    /// The whole command, device setup included.
    total_seconds: f64,
    steps_run: u64,
    checkpoint: Option<&'a Path>,
    resumed: Option<&'a Path>,
    recovery: &'a Recovery,
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
            "hidden": c.hidden,
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
