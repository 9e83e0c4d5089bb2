//! `halfgrad train` survives a lost GPU and reports non-finite data, end to end through
//! the built binary (lavapipe in CI). The device is destroyed by the hidden hook
//! `HALFGRAD_TEST_LOSE_DEVICE_AT_STEP`; NaN samples come from `HALFGRAD_TEST_NAN_SAMPLE`.
//!
//! - a loss mid-run reloads the run's last save, redoes the steps since, and ends bit for
//!   bit where an uninterrupted run ends;
//! - a loss before the first save restarts from the beginning and never trusts a file
//!   another run left at the checkpoint path;
//! - a resumed run goes back to its resume point;
//! - repeated losses stop after three recoveries with the error, leaving the last save;
//! - a loss in any other phase (`HALFGRAD_TEST_LOSE_DEVICE_IN`: a periodic evaluation or
//!   save, the final evaluation or save) is recovered from the same way and ends bit for
//!   bit where an uninterrupted run ends; when recovery gives up in the final save, the
//!   error says what is saved and no partial or temporary file is left;
//! - NaN training samples skip their steps in f16 and bf16 and the summary says so;
//! - `halfgrad gpt train` recovers the same way from a loss at a step and in each phase
//!   (periodic evaluation, sample, periodic save, final evaluation, final sample, final
//!   save, the save after Ctrl-C), a resumed GPT run goes back to its resume point, and
//!   each ends with the checkpoint file and the printed losses and sample of an
//!   uninterrupted run, bit for bit; giving up in the final save leaves the last save
//!   and says so.

use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::text::KJV;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LOSE: &str = "HALFGRAD_TEST_LOSE_DEVICE_AT_STEP";
const NAN: &str = "HALFGRAD_TEST_NAN_SAMPLE";
const LOSE_IN: &str = "HALFGRAD_TEST_LOSE_DEVICE_IN";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("halfgrad-recovery-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `halfgrad train` with a small model and `extra` arguments (no periodic evaluation
/// unless they ask for one), under `env`.
fn train(extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_halfgrad"));
    c.args(["train", "--hidden", "32", "--seed", "3", "--steps", "60"])
        .args(extra)
        .env_remove(LOSE)
        .env_remove(LOSE_IN)
        .env_remove(NAN);
    if !extra.contains(&"--eval-every") {
        c.args(["--eval-every", "0"]);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The JSON summary of a successful `--json` run.
fn summary(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "halfgrad train failed:\n{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", text(o)))
}

/// Same tensors bit for bit and the same run position.
fn assert_same_state(a: &str, b: &str) {
    let (a, b) = (
        Checkpoint::load(Path::new(a)).unwrap(),
        Checkpoint::load(Path::new(b)).unwrap(),
    );
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (x, y) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(x, y, "tensor `{}` differs", x.name);
    }
    for key in ["train.step", "train.batcher"] {
        assert_eq!(a.meta(key).unwrap(), b.meta(key).unwrap(), "{key}");
    }
}

#[test]
fn a_lost_device_mid_run_reloads_the_last_save_and_ends_bit_exact() {
    let dir = TempDir::new("mid");
    let (clean, lost) = (dir.path("clean.safetensors"), dir.path("lost.safetensors"));
    let common = ["--save-every", "20", "--json", "--checkpoint"];
    let s = summary(&train(&[&common[..], &[&clean]].concat(), &[]));
    assert_eq!(
        (s["device_losses"].as_u64(), s["steps_redone"].as_u64()),
        (Some(0), Some(0))
    );

    let out = train(&[&common[..], &[&lost]].concat(), &[(LOSE, "45")]);
    let s = summary(&out);
    let log = text(&out);
    assert!(
        log.contains("GPU device lost at step 45") && log.contains("(step 40)"),
        "{log}"
    );
    assert_eq!(s["device_losses"], 1);
    assert_eq!(s["steps_redone"], 5);
    assert_eq!(s["steps"], 60);
    assert_same_state(&clean, &lost);
}

#[test]
fn a_loss_before_the_first_save_restarts_and_ignores_other_runs_files() {
    let dir = TempDir::new("early");
    let (clean, path) = (dir.path("clean.safetensors"), dir.path("run.safetensors"));
    summary(&train(&["--json", "--checkpoint", &clean], &[]));
    // Another run's checkpoint already sits at the path: it must not be reloaded.
    summary(&train(
        &[
            "--batch",
            "32",
            "--stop-after",
            "5",
            "--json",
            "--checkpoint",
            &path,
        ],
        &[],
    ));

    let out = train(
        &["--save-every", "20", "--json", "--checkpoint", &path],
        &[(LOSE, "7")],
    );
    let s = summary(&out);
    assert!(
        text(&out).contains("reloaded the start (step 0"),
        "{}",
        text(&out)
    );
    assert_eq!(
        (s["device_losses"].as_u64(), s["steps_redone"].as_u64()),
        (Some(1), Some(7))
    );
    assert_same_state(&clean, &path);
}

#[test]
fn a_resumed_run_goes_back_to_its_resume_point() {
    let dir = TempDir::new("resumed");
    let (clean, half, end) = (
        dir.path("clean.safetensors"),
        dir.path("half.safetensors"),
        dir.path("end.safetensors"),
    );
    summary(&train(&["--json", "--checkpoint", &clean], &[]));
    summary(&train(
        &["--stop-after", "30", "--json", "--checkpoint", &half],
        &[],
    ));
    let out = train(
        &["--resume", &half, "--json", "--checkpoint", &end],
        &[(LOSE, "38")],
    );
    let s = summary(&out);
    assert!(
        text(&out).contains("where this run began"),
        "{}",
        text(&out)
    );
    assert_eq!(s["steps_redone"], 8);
    assert_same_state(&clean, &end);
}

#[test]
fn repeated_losses_stop_after_three_recoveries_and_keep_the_last_save() {
    let dir = TempDir::new("repeated");
    let path = dir.path("run.safetensors");
    let out = train(
        &["--save-every", "20", "--checkpoint", &path],
        &[(LOSE, "25,26,27,28")],
    );
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("giving up") && log.contains("device was lost"),
        "{log}"
    );
    assert_eq!(log.matches("GPU device lost at step").count(), 3, "{log}");
    // The lost device could not be read, so the last periodic save stays the newest.
    let ck = Checkpoint::load(Path::new(&path)).unwrap();
    assert_eq!(ck.meta("train.step").unwrap(), "20");
}

#[test]
fn nan_samples_skip_their_steps_and_the_summary_says_why() {
    let dir = TempDir::new("nan");
    for precision in ["f16", "bf16"] {
        let path = dir.path(&format!("{precision}.safetensors"));
        let nan = [(NAN, "0,100,700,1400")];
        let args = ["--precision", precision, "--checkpoint", &path];
        let s = summary(&train(&[&args[..], &["--json"]].concat(), &nan));
        let (skipped, nonfinite) = (s["skipped_steps"].as_u64(), s["nonfinite_steps"].as_u64());
        assert!(skipped.unwrap() > 0, "{precision}: {s}");
        assert_eq!(
            skipped, nonfinite,
            "{precision}: every non-finite step is skipped"
        );
        assert!(s["train_loss"].as_f64().unwrap().is_finite());
        assert!(
            s["eval_accuracy"].as_f64().unwrap() > 0.5,
            "{precision}: {s}"
        );
        let ck = Checkpoint::load(Path::new(&path)).unwrap();
        for t in ck
            .tensors
            .iter()
            .filter(|t| !t.name.starts_with("optim.step"))
        {
            if let Ok(v) = t.to_f32() {
                assert!(v.iter().all(|x| x.is_finite()), "{precision}: `{}`", t.name);
            }
        }
        let out = train(&args, &nan);
        let log = text(&out);
        assert!(out.status.success(), "{log}");
        assert!(
            log.contains(&format!(
                "skipped    {} of 60 steps had inf or NaN",
                skipped.unwrap()
            )),
            "{log}"
        );
        println!(
            "{precision}: {} NaN-data steps of 60 skipped",
            skipped.unwrap()
        );
    }
}

#[test]
fn a_loss_in_any_phase_is_recovered_bit_exact() {
    let dir = TempDir::new("phases");
    let clean = dir.path("clean.safetensors");
    summary(&train(&["--json", "--checkpoint", &clean], &[]));
    // (phase, where the device is lost, the state reloaded, steps redone); saves every 20
    // steps, evaluations every 25.
    for (phase, lost_at, reloaded, redone) in [
        ("eval", 25, "(step 20)", 5),
        ("save", 20, "the start (step 0", 20),
        ("final-eval", 60, "(step 40)", 20),
        ("final-save", 60, "(step 40)", 20),
    ] {
        let path = dir.path(&format!("{phase}.safetensors"));
        let args = [
            "--save-every",
            "20",
            "--eval-every",
            "25",
            "--json",
            "--checkpoint",
            &path,
        ];
        let out = train(&args, &[(LOSE_IN, phase)]);
        let s = summary(&out);
        let log = text(&out);
        assert!(
            log.contains(&format!("GPU device lost at step {lost_at} ")) && log.contains(reloaded),
            "{phase}: {log}"
        );
        assert_eq!(
            (s["device_losses"].as_u64(), s["steps_redone"].as_u64()),
            (Some(1), Some(redone)),
            "{phase}"
        );
        assert_same_state(&clean, &path);
        println!("{phase}: lost at step {lost_at}, reloaded {reloaded}, {redone} steps redone, bit-exact");
    }
}

#[test]
fn giving_up_in_the_final_save_says_what_is_saved_and_leaves_no_partial_file() {
    let dir = TempDir::new("final-save");
    let path = dir.path("run.safetensors");
    let lose = "final-save,final-save,final-save,final-save";
    let out = train(
        &["--save-every", "20", "--checkpoint", &path],
        &[(LOSE_IN, lose)],
    );
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("giving up") && log.contains("holds step 40, this run's last save"),
        "{log}"
    );
    let ck = Checkpoint::load(Path::new(&path)).unwrap();
    assert_eq!(ck.meta("train.step").unwrap(), "40");
    let files: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["run.safetensors"], "{log}");
    // Nothing saved at all: the message says so.
    let other = dir.path("never.safetensors");
    let out = train(&["--checkpoint", &other], &[(LOSE_IN, lose)]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("this run saved nothing"), "{log}");
    assert!(!Path::new(&other).exists());
}

/// The first 6,000 bytes of the KJV, written into `dir` (once).
fn gpt_data(dir: &TempDir) -> String {
    let data = dir.path("text.txt");
    if !Path::new(&data).exists() {
        std::fs::write(&data, &KJV[..6000]).unwrap();
    }
    data
}

/// `halfgrad gpt train` with a 1-layer GPT of width 16 on [`gpt_data`], 12 steps, an
/// evaluation with an 8-byte sample every 6 steps and a save every 4 (unless `extra`
/// sets them), saving to `checkpoint`, under `env`.
fn gpt_command(dir: &TempDir, checkpoint: &str, extra: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_halfgrad"));
    c.args(["gpt", "train", "--data", &gpt_data(dir)])
        .args([
            "--layers", "1", "--heads", "2", "--embd", "16", "--block", "16",
        ])
        .args([
            "--batch",
            "4",
            "--eval-windows",
            "4",
            "--checkpoint",
            checkpoint,
        ])
        .args(extra)
        .env_remove(LOSE)
        .env_remove(LOSE_IN)
        .env_remove(NAN);
    for (option, default) in [
        ("--steps", "12"),
        ("--eval-every", "6"),
        ("--save-every", "4"),
        ("--sample-tokens", "8"),
    ] {
        if !extra.contains(&option) {
            c.args([option, default]);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// [`gpt_command`] with `--json`, run to the end.
fn gpt_train(dir: &TempDir, checkpoint: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    gpt_command(dir, checkpoint, extra, env)
        .arg("--json")
        .output()
        .unwrap()
}

/// The fields of a `gpt train --json` summary that the weights and data decide (the
/// losses, the sample, the scaler): equal bit for bit between runs that end alike.
fn gpt_results(s: &serde_json::Value) -> Vec<(&'static str, serde_json::Value)> {
    [
        "steps",
        "train_loss",
        "val_loss",
        "sample",
        "grad_norm",
        "loss_scale",
        "skipped_steps",
        "optimizer_steps",
    ]
    .into_iter()
    .map(|k| (k, s[k].clone()))
    .collect()
}

#[test]
fn gpt_train_recovers_at_a_step_and_in_every_phase_bit_exact() {
    let dir = TempDir::new("gpt-phases");
    let clean = dir.path("clean.safetensors");
    let reference = summary(&gpt_train(&dir, &clean, &[], &[]));
    assert_eq!(
        (
            reference["device_losses"].as_u64(),
            reference["steps_redone"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(reference["sample"].is_string(), "{reference}");
    // (hook, its value, extra options, where the device is lost, the state reloaded,
    // steps redone); saves every 4 steps, evaluations and samples every 6, 12 steps.
    let no_eval: &[&str] = &["--eval-every", "0"];
    for (hook, value, extra, lost_at, reloaded, redone) in [
        (LOSE, "6", &[][..], 6, "(step 4)", 2),
        (LOSE_IN, "eval", &[][..], 6, "(step 4)", 2),
        (LOSE_IN, "sample", &[][..], 6, "(step 4)", 2),
        (LOSE_IN, "save", &[][..], 4, "the start (step 0", 4),
        (LOSE_IN, "final-eval", &[][..], 12, "(step 8)", 4),
        (LOSE_IN, "sample", no_eval, 12, "(step 8)", 4),
        (LOSE_IN, "final-save", &[][..], 12, "(step 8)", 4),
    ] {
        let what = format!("{value}{}", if extra.is_empty() { "" } else { " (final)" });
        let path = dir.path(&format!("{}.safetensors", what.replace(' ', "")));
        let out = gpt_train(&dir, &path, extra, &[(hook, value)]);
        let s = summary(&out);
        let log = text(&out);
        assert!(
            log.contains(&format!("GPU device lost at step {lost_at} ")) && log.contains(reloaded),
            "{what}: {log}"
        );
        assert_eq!(
            (s["device_losses"].as_u64(), s["steps_redone"].as_u64()),
            (Some(1), Some(redone)),
            "{what}"
        );
        assert_eq!(gpt_results(&s), gpt_results(&reference), "{what}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&clean).unwrap(),
            "{what}: the checkpoint differs from an uninterrupted run's"
        );
        println!("gpt {what}: lost at step {lost_at}, reloaded {reloaded}, {redone} steps redone, bit-exact");
    }
    // The text summary reports the recovery too.
    let path = dir.path("text.safetensors");
    let out = gpt_command(&dir, &path, &[], &[(LOSE_IN, "eval")])
        .output()
        .unwrap();
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("recovery   device lost 1 time(s), recovered each time; 2 steps redone"),
        "{log}"
    );
}

#[test]
fn a_resumed_gpt_run_goes_back_to_its_resume_point_and_gives_up_in_the_final_save() {
    let dir = TempDir::new("gpt-resumed");
    let (clean, half, end) = (
        dir.path("clean.safetensors"),
        dir.path("half.safetensors"),
        dir.path("end.safetensors"),
    );
    let no_saves = ["--save-every", "0"];
    let reference = summary(&gpt_train(&dir, &clean, &no_saves, &[]));
    summary(&gpt_train(
        &dir,
        &half,
        &[&no_saves[..], &["--stop-after", "5"]].concat(),
        &[],
    ));
    let out = gpt_train(
        &dir,
        &end,
        &[&no_saves[..], &["--resume", &half]].concat(),
        &[(LOSE, "9")],
    );
    let s = summary(&out);
    assert!(
        text(&out).contains("(step 5, where this run began)"),
        "{}",
        text(&out)
    );
    assert_eq!(s["steps_redone"], 4);
    assert_eq!(gpt_results(&s), gpt_results(&reference));
    assert_same_state(&clean, &end);

    // Four losses in the final save: three recoveries, then the error says what is on
    // disk, and the folder holds no partial or temporary file.
    let run = dir.path("run.safetensors");
    let lose = "final-save,final-save,final-save,final-save";
    let out = gpt_train(&dir, &run, &[], &[(LOSE_IN, lose)]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("giving up") && log.contains("holds step 8, this run's last save"),
        "{log}"
    );
    assert_eq!(log.matches("GPU device lost at step").count(), 3, "{log}");
    let ck = Checkpoint::load(Path::new(&run)).unwrap();
    assert_eq!(ck.meta("train.step").unwrap(), "8");
    let mut files: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "clean.safetensors",
            "end.safetensors",
            "half.safetensors",
            "run.safetensors",
            "text.txt"
        ],
        "{log}"
    );
}

/// Ctrl-C during `gpt train`, with the device lost in the save that follows: the run
/// reloads its last periodic save, stops there (exit status 130), and the file holds
/// exactly the state an uninterrupted run has at that step.
#[cfg(unix)]
#[test]
fn a_gpt_device_lost_in_the_save_after_ctrl_c_stops_at_the_last_save() {
    use std::io::{BufRead, BufReader, Read};
    let dir = TempDir::new("gpt-interrupt");
    let path = dir.path("run.safetensors");
    let mut child = gpt_command(
        &dir,
        &path,
        &[
            "--steps",
            "2000",
            "--eval-every",
            "4",
            "--sample-tokens",
            "0",
        ],
        &[(LOSE_IN, "interrupt-save")],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut log = String::new();
    let mut line = String::new();
    // The first evaluation line says training runs; then Ctrl-C.
    while stdout.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        if line.starts_with("step      8") {
            let sent = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
            break;
        }
        line.clear();
    }
    stdout.read_to_string(&mut log).unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("GPU device lost at step"), "{log}");
    let marker = "Ctrl-C (SIGINT): saved step ";
    let at = log.find(marker).unwrap_or_else(|| panic!("{log}"));
    let step: u64 = log[at + marker.len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        step >= 8 && step.is_multiple_of(4),
        "a periodic save: {log}"
    );
    // The same run stopped at that step without a loss holds the same state.
    let reference = dir.path("reference.safetensors");
    let stop = step.to_string();
    let out = gpt_train(
        &dir,
        &reference,
        &[
            "--steps",
            "2000",
            "--stop-after",
            &stop,
            "--save-every",
            "0",
        ],
        &[],
    );
    summary(&out);
    assert_same_state(&reference, &path);
    println!("gpt: Ctrl-C, device lost in the save, stopped at the save of step {step}");
}
