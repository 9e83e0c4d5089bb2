//! Ctrl-C (SIGINT) and SIGTERM during `halfgrad train`, through the built binary
//! (lavapipe in CI). Unix only: signals are sent with `kill`.
//!
//! - a signal at a random moment of the run: the step in flight finishes, the state is
//!   saved, the printed command continues the run and ends bit for bit where an
//!   uninterrupted run ends; exit status 130 (SIGINT) or 143 (SIGTERM);
//! - without --checkpoint the run says that nothing was saved and how to keep it;
//! - a second SIGINT quits at once, leaving the previous checkpoint byte-identical;
//! - a device lost in the save after a signal is recovered from (the run stops at its
//!   last save and says so).
#![cfg(unix)]

use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::SplitMix64;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const LOSE_IN: &str = "HALFGRAD_TEST_LOSE_DEVICE_IN";
const SAVE_DELAY: &str = "HALFGRAD_TEST_SAVE_DELAY_MS";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("halfgrad-interrupt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The options of every run here: a small model, 400 steps, an evaluation line every 20
/// steps (it tells the test that training has started).
const RUN: [&str; 10] = [
    "train",
    "--hidden",
    "32",
    "--seed",
    "3",
    "--steps",
    "400",
    "--eval-every",
    "20",
    "--save-every",
];

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_halfgrad"));
    c.args(args).env_remove(LOSE_IN).env_remove(SAVE_DELAY);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// A running `halfgrad`, its stdout and stderr lines arriving on one channel.
struct Running {
    child: Child,
    lines: Receiver<String>,
    log: String,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in streams {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                    let _ = tx.send(line);
                }
            });
        }
        Running {
            child,
            lines,
            log: String::new(),
        }
    }

    /// Waits (up to a minute) for a line containing `what`.
    fn wait_for(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push_str(&line);
                    self.log.push('\n');
                    if line.contains(what) {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {what:?} came:\n{}", self.log);
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the exit; returns the status and everything printed.
    fn finish(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        // The reader threads end with the pipes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.log.push_str(&line);
            self.log.push('\n');
        }
        (status, self.log)
    }
}

fn run_ok(args: &[&str]) {
    let out = command(args, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "halfgrad {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Tensors bit for bit and the same run position.
fn assert_same_state(a: &str, b: &str) {
    let (a, b) = (
        Checkpoint::load(Path::new(a)).unwrap(),
        Checkpoint::load(Path::new(b)).unwrap(),
    );
    assert_eq!(a.tensors, b.tensors);
    for key in ["train.step", "train.batcher", "train.schedule"] {
        assert_eq!(a.meta(key).unwrap(), b.meta(key).unwrap(), "{key}");
    }
}

/// The step in `SIGNAL: saved step K to` and the command on the line after it.
fn saved_step_and_command(log: &str, signal: &str) -> (u64, String) {
    let marker = format!("{signal}: saved step ");
    let at = log
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker:?}:\n{log}"));
    let rest = &log[at + marker.len()..];
    let step = rest.split(' ').next().unwrap().parse().unwrap();
    let command = rest.lines().nth(1).unwrap().trim().to_string();
    (step, command)
}

/// A random pause shorter than half the time the remaining 360 steps take (`per_20`: the
/// time 20 steps took), at most 1.5 s; from a seed printed for replay.
fn random_pause(what: &str, per_20: Duration) -> Duration {
    let seed = std::env::var("HALFGRAD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let window = (per_20.as_millis() as u64 * 9).clamp(1, 1500);
    let ms = SplitMix64::new(seed).below(window);
    println!(
        "{what}: signal {ms} ms after step 40 (20 steps took {} ms; HALFGRAD_TEST_SEED={seed})",
        per_20.as_millis()
    );
    Duration::from_millis(ms)
}

/// Interrupts a run with `signal` at a random moment, continues it with the command it
/// prints, and compares the result with an uninterrupted run.
fn interrupt_and_resume(signal: &str, name: &str, code: i32) {
    let dir = TempDir::new(&signal.to_lowercase());
    let (clean, path) = (dir.path("clean.safetensors"), dir.path("run.safetensors"));
    run_ok(&[&RUN[..], &["0", "--checkpoint", &clean]].concat());

    let mut run = Running::start(&[&RUN[..], &["0", "--checkpoint", &path]].concat(), &[]);
    run.wait_for("step     20");
    let t = Instant::now();
    run.wait_for("step     40");
    std::thread::sleep(random_pause(signal, t.elapsed()));
    run.signal(signal);
    let (status, log) = run.finish();
    assert_eq!(status.code(), Some(code), "{log}");
    assert!(
        log.contains(&format!("{name}: stopping after step")),
        "{log}"
    );
    let (step, resume) = saved_step_and_command(&log, name);
    assert!((40..400).contains(&step), "{log}");
    let ck = Checkpoint::load(Path::new(&path)).unwrap();
    assert_eq!(ck.meta("train.step").unwrap(), step.to_string());
    assert!(resume.ends_with(&format!("--resume {path}")), "{resume}");

    // The printed command, as a shell would run it (no quoting needed here).
    let words: Vec<&str> = resume.split(' ').collect();
    let out = Command::new(words[0]).args(&words[1..]).output().unwrap();
    assert!(out.status.success(), "{resume}: {out:?}");
    assert_same_state(&clean, &path);
    assert_eq!(dir.files(), ["clean.safetensors", "run.safetensors"]);
    println!("{name} at step {step}, saved, resumed: bit-identical to the uninterrupted run");
}

#[test]
fn sigint_saves_and_the_printed_command_resumes_bit_exact() {
    interrupt_and_resume("INT", "Ctrl-C (SIGINT)", 130);
}

#[test]
fn sigterm_saves_and_the_printed_command_resumes_bit_exact() {
    interrupt_and_resume("TERM", "SIGTERM", 143);
}

#[test]
fn without_a_checkpoint_nothing_is_saved_and_the_run_says_how_to_keep_it() {
    let dir = TempDir::new("nockpt");
    let mut run = Running::start(&[&RUN[..], &["0"]].concat(), &[]);
    run.wait_for("step     20");
    run.signal("INT");
    let (status, log) = run.finish();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        log.contains("nothing saved (no --checkpoint)") && log.contains("add --checkpoint FILE"),
        "{log}"
    );
    assert!(dir.files().is_empty());
}

#[test]
fn a_second_sigint_quits_at_once_and_leaves_the_previous_checkpoint() {
    let dir = TempDir::new("twice");
    let path = dir.path("run.safetensors");
    run_ok(
        &[
            &RUN[..],
            &["0", "--stop-after", "30", "--checkpoint", &path],
        ]
        .concat(),
    );
    let before = std::fs::read(&path).unwrap();

    // The save after the first signal waits 20 s (test hook): the second lands in it.
    let mut run = Running::start(
        &[&RUN[..], &["0", "--resume", &path, "--checkpoint", &path]].concat(),
        &[(SAVE_DELAY, "20000")],
    );
    run.wait_for("step     40");
    run.signal("INT");
    run.wait_for("saving step");
    let second = Instant::now();
    run.signal("INT");
    let (status, log) = run.finish();
    assert_eq!(status.code(), Some(130), "{log}");
    let quit = second.elapsed();
    assert!(quit < Duration::from_secs(15), "{log}");
    println!("the second SIGINT quit in {} ms", quit.as_millis());
    assert!(!log.contains("saved step"), "{log}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the checkpoint changed"
    );
    assert_eq!(dir.files(), ["run.safetensors"]);
}

#[test]
fn a_device_lost_in_the_save_after_a_signal_stops_at_the_last_save() {
    let dir = TempDir::new("lost");
    let (clean, path) = (dir.path("clean.safetensors"), dir.path("run.safetensors"));
    run_ok(&[&RUN[..], &["0", "--checkpoint", &clean]].concat());
    let mut run = Running::start(
        &[&RUN[..], &["50", "--checkpoint", &path]].concat(),
        &[(LOSE_IN, "interrupt-save")],
    );
    run.wait_for("step     60");
    run.signal("INT");
    let (status, log) = run.finish();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("GPU device lost at step"), "{log}");
    let (step, resume) = saved_step_and_command(&log, "Ctrl-C (SIGINT)");
    assert_eq!(step % 50, 0, "the state reloaded is a periodic save: {log}");
    let words: Vec<&str> = resume.split(' ').collect();
    let out = Command::new(words[0]).args(&words[1..]).output().unwrap();
    assert!(out.status.success(), "{resume}: {out:?}");
    assert_same_state(&clean, &path);
}
