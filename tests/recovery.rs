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
//! - NaN training samples skip their steps in f16 and bf16 and the summary says so.

use halfgrad::checkpoint::Checkpoint;
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
