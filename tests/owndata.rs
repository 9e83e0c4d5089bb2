//! `halfgrad train --data FILE.csv` and `halfgrad predict`, run as a user would: the digits
//! written out as CSV give the built-in run's result, string labels train, predict and
//! resume bit-exactly, and every bad file is refused with the file, line and column
//! before anything is written.

use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::{Dataset, Digits, SplitMix64};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("halfgrad-owndata-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
    fn write(&self, file: &str, text: &str) -> String {
        let p = self.path(file);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn halfgrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_halfgrad"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `halfgrad args` and parses its `--json` stdout.
fn json(args: &[&str]) -> serde_json::Value {
    let out = halfgrad(args);
    assert!(
        out.status.success(),
        "halfgrad {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `halfgrad args`, expects a failure, returns stderr.
fn fails(args: &[&str]) -> String {
    let out = halfgrad(args);
    assert!(!out.status.success(), "halfgrad {args:?} succeeded");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Samples `range` of the digits as CSV: a header, 64 pixel columns (pixel / 16, printed
/// exactly), the label last.
fn digits_csv(range: std::ops::Range<usize>) -> String {
    let all = Digits::load_all().unwrap();
    let mut s: String = (0..64).map(|i| format!("p{i},")).collect();
    s.push_str("label\n");
    for i in range {
        let (x, y) = all.get(i);
        for v in x {
            write!(s, "{v},").unwrap();
        }
        writeln!(s, "{y}").unwrap();
    }
    s
}

#[test]
fn digits_as_csv_give_the_builtin_result() {
    let dir = TempDir::new("digits");
    let train = dir.write("train.csv", &digits_csv(0..Digits::TRAIN));
    let test = dir.write("test.csv", &digits_csv(Digits::TRAIN..Digits::SAMPLES));
    let ck = dir.path("csv.safetensors").display().to_string();
    let opts = ["--steps", "200", "--eval-every", "0", "--json"];
    let builtin = json(&[&["train"][..], &opts].concat());
    let csv = json(
        &[
            &[
                "train",
                "--data",
                &train,
                "--test",
                &test,
                "--standardize",
                "false",
            ][..],
            &["--checkpoint", &ck],
            &opts,
        ]
        .concat(),
    );
    for key in [
        "eval_loss",
        "eval_accuracy",
        "eval_correct",
        "train_loss",
        "grad_norm",
    ] {
        assert_eq!(builtin[key], csv[key], "{key}");
    }
    assert!(csv["eval_accuracy"].as_f64().unwrap() > 0.8);
    assert_eq!(csv["data"]["classes"].as_array().unwrap().len(), 10);
    let per_class = csv["data"]["per_class"].as_array().unwrap();
    let correct: u64 = per_class
        .iter()
        .map(|c| c["correct"].as_u64().unwrap())
        .sum();
    assert_eq!(correct, csv["eval_correct"].as_u64().unwrap());

    // predict on the test file (it has the label column) agrees with the evaluation.
    let p = json(&["predict", "--checkpoint", &ck, "--data", &test, "--json"]);
    assert_eq!(p["rows"], 360);
    assert_eq!(p["correct"], csv["eval_correct"]);
    // ... and without the label column, as plain CSV lines.
    let unlabelled: String = std::fs::read_to_string(&test)
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
        .collect();
    let rows = dir.write("rows.csv", &unlabelled);
    let out = halfgrad(&["predict", "--checkpoint", &ck, "--data", &rows]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "line,class,probability");
    assert_eq!(lines.len(), 361);
    for (i, l) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = l.split(',').collect();
        let pred = &p["predictions"][i];
        assert_eq!(cells[0], (i + 2).to_string());
        assert_eq!(cells[1], pred["class"].as_str().unwrap());
        let prob: f64 = cells[2].parse().unwrap();
        assert!((prob - pred["probability"].as_f64().unwrap()).abs() < 1e-6);
        assert!(prob > 0.1 - 1e-9 && prob <= 1.0, "{prob}");
    }
}

/// Three classes named by words: points around three centres, a noise column.
fn shapes_csv(rows: usize, seed: u64) -> String {
    let mut rng = SplitMix64::new(seed);
    let mut s = String::from("x,y,noise,shape\n");
    let names = ["circle", "square", "triangle"];
    let centres = [(0.0, 0.0), (3.0, 1.0), (1.0, 3.0)];
    for i in 0..rows {
        let k = i % 3;
        let jitter = |rng: &mut SplitMix64| rng.next_f32() * 2.0 - 1.0;
        let (x, y) = (
            centres[k].0 + jitter(&mut rng),
            centres[k].1 + jitter(&mut rng),
        );
        writeln!(s, "{x},{y},{},\"{}\"", 100.0 * rng.next_f32(), names[k]).unwrap();
    }
    s
}

#[test]
fn string_labels_train_predict_and_resume_exactly() {
    let dir = TempDir::new("shapes");
    let data = dir.write("shapes.csv", &shapes_csv(90, 1));
    let (full, half) = (
        dir.path("full.safetensors").display().to_string(),
        dir.path("half.safetensors").display().to_string(),
    );
    let run = |extra: &[&str]| {
        json(
            &[
                &[
                    "train", "--data", &data, "--label", "shape", "--steps", "60",
                ][..],
                &[
                    "--batch",
                    "16",
                    "--hidden",
                    "16",
                    "--eval-every",
                    "0",
                    "--json",
                ],
                extra,
            ]
            .concat(),
        )
    };
    let a = run(&["--checkpoint", &full]);
    assert_eq!(
        a["data"]["classes"],
        serde_json::json!(["circle", "square", "triangle"])
    );
    assert_eq!(
        (
            a["data"]["train_rows"].as_u64(),
            a["data"]["test_rows"].as_u64()
        ),
        (Some(72), Some(18))
    );
    assert_eq!(a["data"]["standardized"], true);
    assert!(a["eval_accuracy"].as_f64().unwrap() > 0.8, "{a}");

    // The checkpoint records the classes, the statistics and the split.
    let ck = Checkpoint::load(Path::new(&full)).unwrap();
    assert_eq!(
        ck.meta("data.classes").unwrap(),
        r#"["circle","square","triangle"]"#
    );
    assert!(ck
        .meta("data.split")
        .unwrap()
        .contains(r#""kind":"random""#));
    assert!(ck.meta("data.standardize").unwrap().contains("mean"));

    // Stopped half way and resumed in a new process: the same file, bit for bit.
    run(&["--checkpoint", &half, "--stop-after", "30"]);
    let b = json(&[
        "train",
        "--resume",
        &half,
        "--data",
        &data,
        "--checkpoint",
        &half,
        "--steps",
        "60",
        "--json",
    ]);
    assert_eq!(a["eval_loss"], b["eval_loss"]);
    assert_eq!(std::fs::read(&full).unwrap(), std::fs::read(&half).unwrap());

    // Resuming refuses another file, other data options, and a missing --data.
    let other = dir.write("other.csv", &shapes_csv(90, 2));
    let e = fails(&[
        "train", "--resume", &half, "--data", &other, "--steps", "70",
    ]);
    assert!(
        e.contains("other.csv") && e.contains("differ from the file"),
        "{e}"
    );
    let e = fails(&[
        "train",
        "--resume",
        &half,
        "--data",
        &data,
        "--test-split",
        "0.5",
    ]);
    assert!(e.contains("--test-split mismatch"), "{e}");
    let e = fails(&["train", "--resume", &half, "--steps", "70"]);
    assert!(e.contains("pass it again with --data"), "{e}");

    // predict: text labels come back, probabilities in (1/3, 1].
    let new = dir.write(
        "new.csv",
        "x,y,noise\n0.1,-0.2,50\n3.1,0.9,10\n1.0,3.2,70\n",
    );
    let p = json(&["predict", "--checkpoint", &full, "--data", &new, "--json"]);
    let classes: Vec<&str> = p["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["circle", "square", "triangle"]);
    for r in p["predictions"].as_array().unwrap() {
        let prob = r["probability"].as_f64().unwrap();
        assert!(prob > 1.0 / 3.0 && prob <= 1.0, "{prob}");
    }
    let e = fails(&[
        "predict",
        "--checkpoint",
        &full,
        "--data",
        &dir.write("bad.csv", "x,y\n1,2\n"),
    ]);
    assert!(
        e.contains("bad.csv") && e.contains("do not match the training columns"),
        "{e}"
    );
}

#[test]
fn bad_files_are_refused_with_file_line_and_column_and_nothing_written() {
    let dir = TempDir::new("bad");
    let ck = dir.path("ck.safetensors");
    let ck_arg = ck.display().to_string();
    let cases: &[(&str, &str, &[&str], &str)] = &[
        ("empty.csv", "", &[], "empty.csv: the file is empty"),
        (
            "header.csv",
            "a,b,label\n",
            &[],
            "header.csv: there is a header but no data row",
        ),
        (
            "ragged.csv",
            "a,b,label\n1,2,x\n1,2,y\n3,y\n",
            &[],
            "ragged.csv, line 4: 2 cells, but the first row has 3",
        ),
        (
            "text.csv",
            "a,b,label\n1,2,x\n1,two,y\n",
            &[],
            "text.csv, line 3, column 2 (\"b\"): \"two\" is not a number",
        ),
        (
            "nan.csv",
            "a,b,label\n1,2,x\nNaN,2,y\n",
            &[],
            "nan.csv, line 3, column 1 (\"a\"): \"NaN\" is not a finite number",
        ),
        (
            "inf.csv",
            "1,2,x\n1,-inf,y\n",
            &[],
            "inf.csv, line 2, column 2: \"-inf\" is not a finite number",
        ),
        (
            "nolabel.csv",
            "a,b,label\n1,2,x\n3,4,y\n",
            &["--label", "kind"],
            "nolabel.csv: no label column \"kind\" (columns: a, b, label)",
        ),
        (
            "single.csv",
            "a,label\n1,x\n2,x\n3,x\n4,x\n5,x\n",
            &[],
            "single.csv: every row has the label \"x\"",
        ),
        (
            "many.csv",
            "a,label\n1,p\n2,q\n3,r\n4,s\n5,t\n",
            &[],
            "many.csv: 5 classes but only 4 training rows",
        ),
        (
            "big.csv",
            "a,label\n1,p\n2,q\n3,r\n4,s\n5,t\n",
            &["--max-data-bytes", "16"],
            "big.csv: the file is 28 bytes, above the limit of 16 bytes",
        ),
    ];
    for (file, text, extra, expected) in cases {
        let path = dir.write(file, text);
        let e = fails(
            &[
                &["train", "--data", &path, "--checkpoint", &ck_arg][..],
                extra,
            ]
            .concat(),
        );
        let expected = format!("error: {}{expected}", dir.0.join("").display());
        assert!(
            e.starts_with(&expected),
            "{file}:\n{e}\nexpected: {expected}"
        );
        assert!(!ck.exists(), "{file}: a checkpoint was written");
    }
    // A test file with other columns.
    let data = dir.write("ok.csv", "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n");
    let test = dir.write("t.csv", "a,c,label\n1,2,x\n");
    let e = fails(&["train", "--data", &data, "--test", &test]);
    assert!(
        e.contains("t.csv: columns [a, c] do not match the training columns [a, b]"),
        "{e}"
    );
    // A file smaller than the default batch of 64 trains on all its rows per step.
    let tiny = dir.write("tiny.csv", &shapes_csv(10, 3));
    let r = json(&[
        "train", "--data", &tiny, "--steps", "5", "--hidden", "8", "--json",
    ]);
    assert_eq!(
        (r["batch"].as_u64(), r["data"]["train_rows"].as_u64()),
        (Some(8), Some(8))
    );
    // No arguments at all: the guide, exit status 2.
    let out = halfgrad(&[]);
    assert_eq!(out.status.code(), Some(2));
    let guide = String::from_utf8_lossy(&out.stderr);
    assert!(
        guide.contains("First command to try:\n  halfgrad train"),
        "{guide}"
    );
    assert!(guide.contains("halfgrad predict"), "{guide}");
}
