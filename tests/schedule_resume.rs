//! Resuming past the end of the stored learning-rate schedule (`halfgrad train`, built
//! binary, lavapipe): refused with both meanings spelled out; `--keep-schedule` trains at
//! learning rate 0 past the end; `--extend-schedule` stretches the cosine, records it in
//! the checkpoint, and a run interrupted after the stretch resumes bit for bit, also
//! through a lost device.

use halfgrad::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LOSE: &str = "HALFGRAD_TEST_LOSE_DEVICE_AT_STEP";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("halfgrad-schedule-{}-{name}", std::process::id()));
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

/// `halfgrad train` with a small model, no periodic evaluation and `extra` arguments.
fn train(extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_halfgrad"));
    c.args([
        "train",
        "--hidden",
        "32",
        "--seed",
        "3",
        "--eval-every",
        "0",
    ])
    .args(extra)
    .env_remove(LOSE);
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

fn ok(extra: &[&str], env: &[(&str, &str)]) -> String {
    let out = train(extra, env);
    assert!(out.status.success(), "{extra:?}:\n{}", text(&out));
    text(&out)
}

fn load(path: &str) -> Checkpoint {
    Checkpoint::load(Path::new(path)).unwrap()
}

fn assert_same_state(a: &str, b: &str) {
    let (a, b) = (load(a), load(b));
    assert_eq!(a.tensors, b.tensors);
    for key in ["train.step", "train.batcher", "train.schedule"] {
        assert_eq!(a.meta(key).unwrap(), b.meta(key).unwrap(), "{key}");
    }
}

#[test]
fn resuming_past_the_schedule_is_refused_with_both_meanings() {
    let dir = TempDir::new("refuse");
    let (short, out) = (dir.path("short.safetensors"), dir.path("out.safetensors"));
    ok(&["--steps", "25", "--checkpoint", &short], &[]);
    let o = train(
        &["--resume", &short, "--steps", "60", "--checkpoint", &out],
        &[],
    );
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    for needle in [
        "ends at step 25",
        "steps 26 to 60 would train at learning rate 0",
        "--steps 25",
        "continue the same schedule; it ends where it ended",
        "nothing left to train",
        "--extend-schedule",
        "--keep-schedule",
    ] {
        assert!(log.contains(needle), "{needle:?} missing:\n{log}");
    }
    assert!(!Path::new(&out).exists(), "nothing is written");
    println!("{log}");
    // Within the schedule nothing is asked.
    ok(&["--resume", &short, "--steps", "25"], &[]);
}

#[test]
fn keep_schedule_trains_past_the_end_at_learning_rate_zero() {
    let dir = TempDir::new("keep");
    let (short, kept) = (dir.path("short.safetensors"), dir.path("kept.safetensors"));
    ok(&["--steps", "25", "--checkpoint", &short], &[]);
    let log = ok(
        &[
            "--resume",
            &short,
            "--steps",
            "35",
            "--keep-schedule",
            "--checkpoint",
            &kept,
        ],
        &[],
    );
    assert!(log.contains("steps 26 to 35 train at"), "{log}");
    let (a, b) = (load(&short), load(&kept));
    assert_eq!(b.meta("train.step").unwrap(), "35");
    assert_eq!(
        b.meta("train.schedule").unwrap(),
        "cosine:warmup=2,total=25"
    );
    // AdamW at lr 0 (decoupled weight decay included) leaves the weights as they were.
    let weights: Vec<_> = a
        .tensors
        .iter()
        .filter(|t| !t.name.starts_with("optim.") && !t.name.starts_with("scaler."))
        .collect();
    assert!(weights.len() >= 4);
    for t in weights {
        assert_eq!(t, b.tensor(&t.name).unwrap(), "{}", t.name);
    }
}

#[test]
fn extend_schedule_is_recorded_and_resumes_bit_exact() {
    let dir = TempDir::new("extend");
    let p = |f: &str| dir.path(f);
    let (short, full, half, resumed, lost) = (
        p("short.safetensors"),
        p("full.safetensors"),
        p("half.safetensors"),
        p("resumed.safetensors"),
        p("lost.safetensors"),
    );
    ok(&["--steps", "25", "--checkpoint", &short], &[]);
    let extend = ["--resume", &short, "--steps", "60", "--extend-schedule"];
    let log = ok(&[&extend[..], &["--checkpoint", &full]].concat(), &[]);
    assert!(
        log.contains("stretched from cosine:warmup=2,total=25 to cosine:warmup=2,total=60"),
        "{log}"
    );
    let ck = load(&full);
    assert_eq!(ck.meta("train.step").unwrap(), "60");
    assert_eq!(
        ck.meta("train.schedule").unwrap(),
        "cosine:warmup=2,total=60"
    );
    assert_eq!(
        ck.meta("train.schedule.stretched").unwrap(),
        "at step 25 from cosine:warmup=2,total=25"
    );
    // It trained: the weights moved from the short run's.
    assert_ne!(
        load(&short).tensor("0.weight").unwrap(),
        ck.tensor("0.weight").unwrap()
    );

    // Stopped after the stretch and resumed without the flag (the checkpoint holds the
    // stretched schedule), and again with it (a no-op now): both bit-exact.
    ok(
        &[&extend[..], &["--stop-after", "15", "--checkpoint", &half]].concat(),
        &[],
    );
    assert_eq!(
        load(&half).meta("train.schedule.stretched").unwrap(),
        "at step 25 from cosine:warmup=2,total=25"
    );
    for flag in [&[][..], &["--extend-schedule"][..]] {
        ok(
            &[
                &["--resume", &half, "--steps", "60", "--checkpoint", &resumed],
                flag,
            ]
            .concat(),
            &[],
        );
        assert_same_state(&full, &resumed);
        assert_eq!(
            load(&resumed).meta("train.schedule.stretched").unwrap(),
            "at step 25 from cosine:warmup=2,total=25"
        );
    }

    // A lost device after the stretch goes back to the resume point (step 25, the old
    // schedule on disk) and stretches again: still bit-exact.
    let log = ok(
        &[&extend[..], &["--checkpoint", &lost]].concat(),
        &[(LOSE, "40")],
    );
    assert!(log.contains("GPU device lost at step 40"), "{log}");
    assert_same_state(&full, &lost);
}

#[test]
fn gpt_train_asks_too_and_extends_its_schedule() {
    let dir = TempDir::new("gpt");
    let (short, long) = (dir.path("short.safetensors"), dir.path("long.safetensors"));
    let gpt = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_halfgrad"))
            .args([
                "gpt",
                "train",
                "--layers",
                "1",
                "--heads",
                "2",
                "--embd",
                "16",
                "--block",
                "16",
                "--batch",
                "2",
                "--eval-every",
                "0",
                "--eval-windows",
                "1",
                "--sample-tokens",
                "0",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = gpt(&["--steps", "4", "--checkpoint", &short]);
    assert!(o.status.success(), "{}", text(&o));
    let o = gpt(&["--resume", &short, "--steps", "8", "--checkpoint", &long]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("ends at step 4") && log.contains("--extend-schedule"),
        "{log}"
    );
    assert!(!Path::new(&long).exists());
    let o = gpt(&[
        "--resume",
        &short,
        "--steps",
        "8",
        "--extend-schedule",
        "--checkpoint",
        &long,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let ck = load(&long);
    assert_eq!(ck.meta("train.step").unwrap(), "8");
    assert!(
        ck.meta("train.schedule").unwrap().ends_with(",total=8"),
        "{:?}",
        ck.meta("train.schedule")
    );
}
