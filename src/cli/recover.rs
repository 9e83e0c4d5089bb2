//! Surviving a lost GPU in `halfgrad train` and `halfgrad gpt train`, and reporting the
//! steps a run redid or skipped.
//!
//! When a call returns `Error::DeviceLost` (a driver reset or timeout, an unplugged
//! GPU, `Gpu::simulate_device_loss`), the run opens a new device, rebuilds the trainer
//! from the newest state it can trust and continues:
//!
//! 1. the checkpoint this run last saved (`--checkpoint PATH --save-every N`), else
//! 2. the checkpoint it was resumed from (`--resume`), else
//! 3. its start (same settings and seed).
//!
//! A file at `--checkpoint` that this run has not written is never used: it may hold
//! another run. Resuming is exact (same batches, noise and updates), so the steps between
//! that state and the loss are redone bit for bit; the summary counts them. A run gives
//! up after [`MAX_RECOVERIES`] losses. [`Recovery`] serves any trainer that can be
//! reloaded and rebuilt ([`Recoverable`]: the MLP's `Trainer`, the `GptTrainer`).
//!
//! Every phase goes through this: the steps, the periodic evaluations, samples and saves,
//! the final statistics, evaluation, sample and save, and the save after Ctrl-C. A save
//! that meets a lost device fails before it touches the file (the state is read from the
//! GPU first), so no phase leaves a partial file. When recovery is impossible the error
//! says what the run saved ([`Recovery::on_disk`]).
//!
//! Hidden test hooks (environment variables, for tests/recovery.rs):
//! `HALFGRAD_TEST_LOSE_DEVICE_AT_STEP=N[,M...]` destroys the device when the run is about
//! to take step N + 1 (each listed step fires once);
//! `HALFGRAD_TEST_LOSE_DEVICE_IN=PHASE[,PHASE...]` destroys it at the start of the next
//! phase of that name ([`Phase`]: `eval`, `sample`, `save`, `final-eval`, `final-save`,
//! `interrupt-save`; each listing fires once); `HALFGRAD_TEST_NAN_SAMPLE=I` replaces
//! training sample I's features with NaN.

use halfgrad::data::{Dataset, InMemory};
use halfgrad::train::{GptTrainer, LrSchedule, TrainStats, Trainer};
use halfgrad::{Error, Gpu, Result};
use std::path::{Path, PathBuf};

/// Device losses one run recovers from before it stops with the error.
pub const MAX_RECOVERIES: u32 = 3;

const LOSE_DEVICE_ENV: &str = "HALFGRAD_TEST_LOSE_DEVICE_AT_STEP";
const LOSE_IN_ENV: &str = "HALFGRAD_TEST_LOSE_DEVICE_IN";
const NAN_SAMPLE_ENV: &str = "HALFGRAD_TEST_NAN_SAMPLE";

/// The phases of a run other than the steps themselves, for the device-loss test hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A periodic evaluation (`--eval-every`).
    Eval,
    /// A generated sample (`gpt train`: at each periodic evaluation and at the end).
    Sample,
    /// A periodic save (`--save-every`).
    Save,
    /// The statistics and test (`gpt train`: validation) evaluation after the last step.
    FinalEval,
    /// The save after the last step.
    FinalSave,
    /// The save after Ctrl-C or SIGTERM.
    InterruptSave,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Eval,
        Phase::Sample,
        Phase::Save,
        Phase::FinalEval,
        Phase::FinalSave,
        Phase::InterruptSave,
    ];

    fn name(self) -> &'static str {
        match self {
            Phase::Eval => "eval",
            Phase::Sample => "sample",
            Phase::Save => "save",
            Phase::FinalEval => "final-eval",
            Phase::FinalSave => "final-save",
            Phase::InterruptSave => "interrupt-save",
        }
    }
}

/// The phases listed in `HALFGRAD_TEST_LOSE_DEVICE_IN` (none when unset).
fn env_phases() -> Result<Vec<Phase>> {
    let Ok(v) = std::env::var(LOSE_IN_ENV) else {
        return Ok(Vec::new());
    };
    v.split(',')
        .map(|name| {
            Phase::ALL
                .into_iter()
                .find(|p| p.name() == name.trim())
                .ok_or_else(|| {
                    let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
                    Error::InvalidArgument(format!(
                        "{LOSE_IN_ENV}={v:?}: `{name}` is not one of {}",
                        names.join(", ")
                    ))
                })
        })
        .collect()
}

/// A trainer that a run can rebuild on a new device after a loss.
pub trait Recoverable: Sized {
    /// The run a checkpoint holds, restored exactly on `gpu`.
    fn load(gpu: &Gpu, path: &Path) -> Result<Self>;
    /// Steps taken.
    fn steps(&self) -> u64;
    fn gpu(&self) -> &Gpu;
    /// The learning-rate schedule the next steps follow.
    fn schedule(&self) -> LrSchedule;
    fn set_schedule(&mut self, schedule: LrSchedule) -> Result<()>;
}

impl Recoverable for Trainer {
    fn load(gpu: &Gpu, path: &Path) -> Result<Self> {
        Trainer::load(gpu, path)
    }
    fn steps(&self) -> u64 {
        Trainer::steps(self)
    }
    fn gpu(&self) -> &Gpu {
        Trainer::gpu(self)
    }
    fn schedule(&self) -> LrSchedule {
        self.config().schedule
    }
    fn set_schedule(&mut self, schedule: LrSchedule) -> Result<()> {
        Trainer::set_schedule(self, schedule)
    }
}

impl Recoverable for GptTrainer {
    fn load(gpu: &Gpu, path: &Path) -> Result<Self> {
        GptTrainer::load(gpu, path)
    }
    fn steps(&self) -> u64 {
        GptTrainer::steps(self)
    }
    fn gpu(&self) -> &Gpu {
        GptTrainer::gpu(self)
    }
    fn schedule(&self) -> LrSchedule {
        self.trainer().config().schedule
    }
    fn set_schedule(&mut self, schedule: LrSchedule) -> Result<()> {
        GptTrainer::set_schedule(self, schedule)
    }
}

/// Builds a run's trainer at step 0 on a device: the same settings, seed (and initial
/// weights) as the run's start, so the steps redone from it are the same steps.
pub type Rebuild<'a, T> = Box<dyn Fn(&Gpu) -> Result<T> + 'a>;

/// Where the run began: the state to go back to when it has saved nothing yet.
pub enum Start<'a, T> {
    /// `--resume PATH`.
    Resumed(PathBuf),
    /// A new run, rebuilt by the closure.
    Fresh(Rebuild<'a, T>),
}

impl<'a, T> Start<'a, T> {
    /// A run resumed from `resumed`, else a new one that `fresh` rebuilds.
    pub fn new(resumed: Option<&Path>, fresh: impl Fn(&Gpu) -> Result<T> + 'a) -> Self {
        match resumed {
            Some(p) => Start::Resumed(p.to_path_buf()),
            None => Start::Fresh(Box::new(fresh)),
        }
    }
}

/// The recovery state of one training run.
pub struct Recovery<'a, T> {
    start: Start<'a, T>,
    /// The run's `--checkpoint` path.
    checkpoint: Option<PathBuf>,
    /// The checkpoint this run last wrote, and the step it holds.
    last_save: Option<(PathBuf, u64)>,
    /// The run's schedule (a resumed run may have stretched the one it loaded): set
    /// again on every rebuilt trainer.
    schedule: LrSchedule,
    /// Test hook: steps before which the device is lost (each once).
    lose_at: Vec<u64>,
    /// Test hook: phases at whose start the device is lost (each listing once).
    lose_in: Vec<Phase>,
    /// Device losses recovered from.
    pub device_losses: u32,
    /// Steps taken twice because of them.
    pub steps_redone: u64,
}

/// The comma-separated numbers of environment variable `name` (none when unset).
fn env_numbers<T: std::str::FromStr>(name: &str) -> Result<Vec<T>> {
    let Ok(v) = std::env::var(name) else {
        return Ok(Vec::new());
    };
    v.split(',')
        .map(|n| n.trim().parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::InvalidArgument(format!("{name}={v:?}: expected numbers")))
}

impl<'a, T: Recoverable> Recovery<'a, T> {
    /// The state of a run that begins at `start` with `trainer` (its schedule final:
    /// after any stretch) and saves to `checkpoint`, if given.
    pub fn new(trainer: &T, start: Start<'a, T>, checkpoint: Option<&Path>) -> Result<Self> {
        Ok(Recovery {
            start,
            checkpoint: checkpoint.map(Path::to_path_buf),
            last_save: None,
            schedule: trainer.schedule(),
            lose_at: env_numbers(LOSE_DEVICE_ENV)?,
            lose_in: env_phases()?,
            device_losses: 0,
            steps_redone: 0,
        })
    }

    /// Call before every step: fires the device-loss test hook.
    pub fn before_step(&mut self, trainer: &T) {
        if let Some(i) = self.lose_at.iter().position(|&s| s == trainer.steps()) {
            self.lose_at.remove(i);
            trainer.gpu().simulate_device_loss();
        }
    }

    /// Call at the start of `phase`: fires the device-loss test hook.
    pub fn before(&mut self, phase: Phase, trainer: &T) {
        if let Some(i) = self.lose_in.iter().position(|&p| p == phase) {
            self.lose_in.remove(i);
            trainer.gpu().simulate_device_loss();
        }
    }

    /// What this run has on disk, for messages after a failure: its last save, or that
    /// it saved nothing.
    pub fn on_disk(&self) -> String {
        match (&self.last_save, &self.checkpoint) {
            (Some((path, step)), _) => {
                format!("{} holds step {step}, this run's last save", path.display())
            }
            (None, Some(path)) => format!(
                "this run saved nothing; {} is as it was before the run",
                path.display()
            ),
            (None, None) => "nothing was saved (no --checkpoint)".to_string(),
        }
    }

    /// Call after every successful save of the run's checkpoint.
    pub fn saved(&mut self, path: &Path, step: u64) {
        self.last_save = Some((path.to_path_buf(), step));
    }

    /// After `DeviceLost` (`why`): a new device and a trainer rebuilt from the newest
    /// trusted state replace `trainer`. Returns the line to show the user.
    pub fn recover(&mut self, why: &str, trainer: &mut T) -> Result<String> {
        let lost_at = trainer.steps();
        if self.device_losses >= MAX_RECOVERIES {
            return Err(Error::DeviceLost(format!(
                "{why} (at step {lost_at}; the device was lost {} times in this run, giving \
                 up; {})",
                self.device_losses + 1,
                self.on_disk()
            )));
        }
        self.device_losses += 1;
        let gpu = Gpu::new_blocking()?;
        let (rebuilt, from) = match (&self.last_save, &self.start) {
            (Some((path, step)), _) => {
                let t = T::load(&gpu, path)?;
                if t.steps() != *step {
                    return Err(Error::Checkpoint {
                        path: path.display().to_string(),
                        message: format!(
                            "holds step {} but this run saved step {step} there: another \
                             process wrote it; not continuing from it",
                            t.steps()
                        ),
                    });
                }
                (t, format!("{} (step {step})", path.display()))
            }
            (None, Start::Resumed(path)) => {
                let t = T::load(&gpu, path)?;
                let from = format!(
                    "{} (step {}, where this run began)",
                    path.display(),
                    t.steps()
                );
                (t, from)
            }
            (None, Start::Fresh(rebuild)) => (
                rebuild(&gpu)?,
                "the start (step 0; nothing saved yet)".to_string(),
            ),
        };
        let mut rebuilt = rebuilt;
        if rebuilt.schedule() != self.schedule {
            rebuilt.set_schedule(self.schedule)?;
        }
        let redo = lost_at.saturating_sub(rebuilt.steps());
        self.steps_redone += redo;
        *trainer = rebuilt;
        Ok(format!(
            "GPU device lost at step {lost_at} ({why}); opened {} again and reloaded {from}; \
             redoing {redo} steps",
            gpu.adapter().name
        ))
    }

    /// The summary line, when the device was lost at least once.
    pub fn summary(&self) -> Option<String> {
        (self.device_losses > 0).then(|| {
            format!(
                "device lost {} time(s), recovered each time; {} steps redone",
                self.device_losses, self.steps_redone
            )
        })
    }
}

/// Why steps were skipped, when some were: the summary's explanation of the count.
pub fn skipped_note(s: &TrainStats) -> Option<String> {
    if s.nonfinite_steps == 0 {
        return None;
    }
    let applied = s.nonfinite_steps.saturating_sub(s.skipped_steps);
    let mut note = format!(
        "{} of {} steps had inf or NaN gradients (non-finite input data, or f16 overflow at \
         a high loss scale)",
        s.nonfinite_steps, s.step
    );
    if s.skipped_steps > 0 {
        note.push_str(&format!(
            "; {} were skipped (no weight or optimizer state changed; a dynamic loss scale \
             halves at each)",
            s.skipped_steps
        ));
    }
    if applied > 0 {
        note.push_str(&format!(
            "; {applied} were applied because the scaler does not skip in this \
             configuration: the weights may hold NaN"
        ));
    }
    Some(note)
}

/// Test hook: the features of the training samples listed in `HALFGRAD_TEST_NAN_SAMPLE`
/// become NaN.
pub fn nan_sample_hook(train: InMemory) -> Result<InMemory> {
    let samples = env_numbers::<usize>(NAN_SAMPLE_ENV)?;
    if samples.is_empty() {
        return Ok(train);
    }
    let f = train.features();
    let mut inputs = train.inputs().to_vec();
    for i in samples {
        if i >= train.len() {
            return Err(Error::InvalidArgument(format!(
                "{NAN_SAMPLE_ENV}={i}: the training set has {} samples",
                train.len()
            )));
        }
        inputs[i * f..(i + 1) * f].fill(f32::NAN);
    }
    InMemory::new(inputs, train.labels().to_vec(), f, train.classes())
}
