//! Ctrl-C (SIGINT) and SIGTERM during a training run: the first signal asks the loop to
//! stop after the step in flight (it then saves and prints the command that resumes); a
//! second one exits at once with the signal's code, leaving the previous checkpoint as it
//! was (saves are atomic: a rename replaces the old file only when the new one is whole).
//!
//! Exit codes follow the shell convention 128 + signal: 130 for SIGINT, 143 for SIGTERM.
//! On platforms without Unix signals nothing is installed and Ctrl-C keeps its default
//! (immediate) effect.
//!
//! A training command uses it in three calls: [`Interrupts::install`] before its loop,
//! [`Interrupts::stop_before_step`] at the top of each step (it prints the notice once),
//! and, when that returned a signal, [`before_save`] + its own save (when it has a
//! checkpoint path) and [`finish`] (says how to resume; the exit code).
//!
//! Hidden test hook (tests/interrupt.rs): `HALFGRAD_TEST_SAVE_DELAY_MS=N` waits N ms
//! before the save that follows a signal, so a test can send the second one during it.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const SAVE_DELAY_ENV: &str = "HALFGRAD_TEST_SAVE_DELAY_MS";

/// Which signal asked the run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    /// The process exit code that reports this signal (128 + its number).
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }

    /// `SIGINT` or `SIGTERM`.
    pub fn short_name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "Ctrl-C (SIGINT)",
            StopSignal::Terminate => "SIGTERM",
        }
    }
}

/// The installed handlers; cheap to poll between steps.
#[derive(Debug, Clone)]
pub struct Interrupts {
    /// Set by the first SIGINT or SIGTERM; arms the immediate exit of the second one.
    #[cfg_attr(not(unix), allow(dead_code))]
    armed: Arc<AtomicBool>,
    /// 0: none, else the number of the first signal received.
    which: Arc<AtomicUsize>,
    /// The stop notice was printed.
    announced: Arc<AtomicBool>,
}

const NONE: usize = 0;
#[cfg_attr(not(unix), allow(dead_code))]
const SIGINT_SEEN: usize = 1;
#[cfg_attr(not(unix), allow(dead_code))]
const SIGTERM_SEEN: usize = 2;

impl Interrupts {
    /// Installs the handlers (Unix); a failure to install is reported as a warning and
    /// leaves the default behaviour, which loses nothing already saved.
    pub fn install() -> Interrupts {
        let interrupts = Interrupts {
            armed: Arc::new(AtomicBool::new(false)),
            which: Arc::new(AtomicUsize::new(NONE)),
            announced: Arc::new(AtomicBool::new(false)),
        };
        #[cfg(unix)]
        if let Err(e) = interrupts.register() {
            eprintln!("warning: could not install the Ctrl-C handler ({e}); Ctrl-C stops at once");
        }
        interrupts
    }

    #[cfg(unix)]
    fn register(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        for (signal, seen, code) in [(SIGINT, SIGINT_SEEN, 130), (SIGTERM, SIGTERM_SEEN, 143)] {
            // Order matters: the exit check runs before the flag is set, so only a second
            // signal finds the run armed.
            flag::register_conditional_shutdown(signal, code, Arc::clone(&self.armed))?;
            // Record the first signal only (a later SIGTERM does not rename a Ctrl-C).
            let which = Arc::clone(&self.which);
            // SAFETY: the action only performs atomic operations, which are signal safe.
            unsafe {
                signal_hook::low_level::register(signal, move || {
                    let _ = which.compare_exchange(NONE, seen, Ordering::SeqCst, Ordering::SeqCst);
                })?;
            }
            flag::register(signal, Arc::clone(&self.armed))?;
        }
        Ok(())
    }

    /// The first stop signal received, if any.
    pub fn requested(&self) -> Option<StopSignal> {
        match self.which.load(Ordering::SeqCst) {
            SIGINT_SEEN => Some(StopSignal::Interrupt),
            SIGTERM_SEEN => Some(StopSignal::Terminate),
            _ => None,
        }
    }

    /// Call before each step: the signal to stop for, if one came. The first time it
    /// returns one it prints (through `print`, e.g. around a progress bar) that the run
    /// stops at `step` and how to quit at once.
    pub fn stop_before_step(&self, step: u64, print: impl FnOnce(&str)) -> Option<StopSignal> {
        let signal = self.requested()?;
        if !self.announced.swap(true, Ordering::SeqCst) {
            print(&format!(
                "{}: stopping after step {step} (the step in flight is done); press Ctrl-C \
                 again to quit at once without saving",
                signal.name()
            ));
        }
        Some(signal)
    }
}

/// Call just before the save that follows a signal (a test hook may pause there).
pub fn before_save(step: u64, checkpoint: &Path) {
    if let Some(ms) = std::env::var(SAVE_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        eprintln!("saving step {step} to {} ...", checkpoint.display());
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Ends a run stopped by `signal` after `step` steps, once its state is saved to
/// `checkpoint` (when it has one): prints the command that resumes, or that nothing was
/// saved and how to keep the state next time. `json`: also one JSON object on stdout.
/// `exclusive`: options (taking a value) that exclude `--resume`, left out of the command
/// (`--init` of `gpt train`). Returns the signal's exit code.
pub fn finish(
    signal: StopSignal,
    step: u64,
    checkpoint: Option<&Path>,
    json: bool,
    exclusive: &[&str],
) -> ExitCode {
    let resume = checkpoint.map(|path| {
        let command = resume_command(std::env::args_os(), path, exclusive);
        eprintln!(
            "{}: saved step {step} to {}; continue with:\n  {command}",
            signal.name(),
            path.display()
        );
        command
    });
    if resume.is_none() {
        eprintln!(
            "{}: stopped at step {step}; nothing saved (no --checkpoint). To keep the state \
             next time, add --checkpoint FILE: Ctrl-C then saves it and prints the command \
             that continues the run",
            signal.name()
        );
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "interrupted": signal.short_name(),
                "steps": step,
                "checkpoint": checkpoint.map(|p| p.display().to_string()),
                "resume": resume,
            })
        );
    }
    ExitCode::from(signal.exit_code())
}

/// The command line `args` (program first) with its `--resume` option, if any, replaced
/// by `--resume checkpoint` at the end, and the options in `exclusive` (each taking a
/// value) left out; every other option is kept (the settings a resumed run is given must
/// match the checkpoint's, and these are the ones that made it). Arguments are quoted
/// for a POSIX shell where needed.
pub fn resume_command(
    args: impl IntoIterator<Item = OsString>,
    checkpoint: &Path,
    exclusive: &[&str],
) -> String {
    let dropped = |word: &str| word == "--resume" || exclusive.contains(&word);
    let mut words = Vec::new();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let text = a.to_string_lossy().into_owned();
        if dropped(&text) {
            args.next();
            continue;
        }
        if text
            .split_once('=')
            .is_some_and(|(option, _)| dropped(option))
        {
            continue;
        }
        words.push(text);
    }
    words.push("--resume".into());
    words.push(checkpoint.display().to_string());
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` as one POSIX shell word: unchanged when it holds only safe characters, else in
/// single quotes.
fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str], ck: &str) -> String {
        resume_command(args.iter().map(OsString::from), Path::new(ck), &["--init"])
    }

    #[test]
    fn the_resume_command_replaces_resume_and_quotes() {
        assert_eq!(
            cmd(
                &["halfgrad", "train", "--steps", "60", "--checkpoint", "c"],
                "c"
            ),
            "halfgrad train --steps 60 --checkpoint c --resume c"
        );
        assert_eq!(
            cmd(
                &[
                    "hg",
                    "train",
                    "--resume",
                    "old",
                    "--resume=x",
                    "--checkpoint",
                    "c"
                ],
                "c"
            ),
            "hg train --checkpoint c --resume c"
        );
        assert_eq!(
            cmd(
                &[
                    "hg",
                    "gpt",
                    "train",
                    "--init",
                    "hf",
                    "--init=x",
                    "--steps=9"
                ],
                "c"
            ),
            "hg gpt train --steps=9 --resume c"
        );
        assert_eq!(
            cmd(&["hg", "--data", "my file's.csv"], "a b"),
            "hg --data 'my file'\\''s.csv' --resume 'a b'"
        );
    }
}
