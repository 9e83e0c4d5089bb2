//! Reliability campaigns, kept out of the default CI run because they take minutes:
//!
//! - `cargo xtask fuzz [--target checkpoint|text|hf] [--cases N] [--seed S]`: the
//!   deterministic property campaigns over damaged checkpoint files
//!   (examples/checkpoint_fuzz.rs), damaged texts for the GPT's data loader or damaged
//!   Hugging Face export folders for `--init` (examples/loader_fuzz.rs), in release mode.
//! - `cargo xtask long-run [ARGS]`: a long F16 training run on the available adapter that
//!   checks the loss scale's range, finite master weights and the skipped-step rate
//!   (examples/long_run.rs).

use crate::{cargo, step, Result};

/// Lines for the usage text.
pub const USAGE: &str = "  fuzz [--target checkpoint|text|hf] [--cases N] [--seed S]
               property campaign over damaged checkpoints (default), texts or Hugging
               Face exports (release
               build; default 1,000,000 cases): no panic, typed errors, bounded allocation
  long-run [ARGS]
               20,000 F16 training steps with a short growth interval: the loss scale
               stays in [1, 2^24], master weights stay finite, skipped steps reported
";

/// Runs one of this module's commands; `None` when `cmd` is not one of them.
pub fn run(cmd: &str, args: &[String]) -> Option<Result> {
    match cmd {
        "fuzz" => Some(fuzz(args)),
        "long-run" => Some(long_run(args)),
        _ => None,
    }
}

fn fuzz(args: &[String]) -> Result {
    let mut cases = "1000000".to_string();
    let mut target = "checkpoint".to_string();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--cases" => cases = it.next().ok_or("--cases needs a number")?.clone(),
            "--target" => {
                target = it
                    .next()
                    .ok_or("--target needs checkpoint or text")?
                    .clone()
            }
            "--seed" => {
                rest.push(a.clone());
                rest.push(it.next().ok_or("--seed needs a number")?.clone());
            }
            other => return Err(format!("fuzz: unknown argument `{other}`")),
        }
    }
    let example = match target.as_str() {
        "checkpoint" => "checkpoint_fuzz",
        "text" | "hf" => "loader_fuzz",
        other => {
            return Err(format!(
                "fuzz: unknown target `{other}` (checkpoint, text, hf)"
            ))
        }
    };
    let mut c = cargo();
    c.args(["run", "--release", "--example", example, "--", "--cases"])
        .arg(&cases)
        .args(&rest);
    if example == "loader_fuzz" {
        c.args(["--target", &target]);
    }
    step(&format!("{target} property campaign ({cases} cases)"), c)
}

fn long_run(args: &[String]) -> Result {
    let mut c = cargo();
    c.args(["run", "--release", "--example", "long_run", "--"])
        .args(args);
    step("long F16 run", c)
}
