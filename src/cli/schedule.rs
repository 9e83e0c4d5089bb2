//! Resuming with `--steps` past the end of the saved learning-rate schedule (`halfgrad
//! train` and `halfgrad gpt train`): the steps past a cosine's end would train at
//! learning rate 0, so the run asks which meaning was intended: stretch the schedule to
//! the new end (`--extend-schedule`), keep it (`--keep-schedule`), or finish the old one
//! (`--steps <its end>`).

use halfgrad::train::LrSchedule;
use halfgrad::{Error, Result};
use std::path::Path;

/// The two flags, flattened into a training command's options.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct ScheduleEndArgs {
    /// With --resume and --steps past the end of the checkpoint's cosine schedule:
    /// stretch the schedule to end at --steps (the stretched schedule is saved, so a later
    /// resume follows it).
    #[arg(long, conflicts_with = "keep_schedule")]
    pub extend_schedule: bool,
    /// With --resume and --steps past the end of the checkpoint's cosine schedule: keep
    /// it, training the steps past its end at learning rate 0.
    #[arg(long)]
    pub keep_schedule: bool,
}

impl ScheduleEndArgs {
    /// Refuses the flags on a new run (its schedule spans --steps already).
    pub fn check(&self, resuming: bool) -> Result<()> {
        if (self.extend_schedule || self.keep_schedule) && !resuming {
            return Err(Error::InvalidArgument(
                "--extend-schedule and --keep-schedule apply to --resume (a new run's \
                 schedule already spans --steps)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// A run resumed from `ck` at `step` with `schedule`, asked to train to `steps`: the
    /// stretched schedule (`Some`, with --extend-schedule), the same one (`None`: within
    /// its end, or --keep-schedule), or the refusal that spells out both meanings.
    pub fn resolve(
        &self,
        schedule: LrSchedule,
        step: u64,
        steps: u64,
        ck: &Path,
    ) -> Result<Option<LrSchedule>> {
        let Some(total) = schedule.end().filter(|&total| steps > total) else {
            return Ok(None);
        };
        if self.extend_schedule {
            let longer = schedule.stretched_to(steps)?;
            eprintln!(
                "note: learning-rate schedule stretched from {schedule} to {longer} at step \
                 {step} (saved with the checkpoint)"
            );
            return Ok(Some(longer));
        }
        if self.keep_schedule {
            eprintln!(
                "note: the learning-rate schedule ends at step {total}; steps {} to {steps} \
                 train at learning rate 0 (--keep-schedule)",
                total + 1
            );
            return Ok(None);
        }
        let done = if step >= total {
            format!(
                "it ended there already: {} holds step {step}, there is nothing left to train",
                ck.display()
            )
        } else {
            format!("trains steps {} to {total}", step + 1)
        };
        let choices = [
            (
                format!("--steps {total}"),
                format!("continue the same schedule; it ends where it ended ({done})"),
            ),
            (
                "--extend-schedule".to_string(),
                format!(
                    "stretch the cosine to end at step {steps}: from step {step} on the \
                     learning rate follows the curve of a {steps}-step run (recorded in the \
                     checkpoint, so later resumes follow it)"
                ),
            ),
            (
                "--keep-schedule".to_string(),
                format!("train to step {steps} anyway, at learning rate 0 after step {total}"),
            ),
        ];
        let choices: String = choices
            .iter()
            .map(|(option, meaning)| format!("\n  {option:<19}  {meaning}"))
            .collect();
        Err(Error::InvalidArgument(format!(
            "{} holds a learning-rate schedule ({schedule}) that ends at step {total}, but \
             --steps {steps} asks for more: steps {} to {steps} would train at learning \
             rate 0. Say which you mean:{choices}",
            ck.display(),
            total + 1,
        )))
    }
}
