//! `halfgrad predict`: the class and its probability for every row of a CSV file, from a
//! checkpoint of `halfgrad train` (CSV or digits). The rows get the training run's
//! standardization; a label column, when the file has one, is compared and the accuracy
//! reported.

use super::data::csv_options;
use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::csv::{self, LabelColumn, Split, DEFAULT_MAX_BYTES};
use halfgrad::data::{CsvMeta, CsvTable, Digits};
use halfgrad::train::Trainer;
use halfgrad::{Gpu, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PredictArgs {
    /// A checkpoint written by `halfgrad train --checkpoint` (or the browser page).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The rows to classify: a CSV file with the training run's feature columns, and
    /// optionally its label column (then the accuracy is reported too).
    #[arg(long)]
    data: PathBuf,
    /// Whether the first row is a header: true or false [default: detected].
    #[arg(long)]
    header: Option<bool>,
    /// Print one JSON object instead of CSV lines.
    #[arg(long)]
    json: bool,
    /// Refuse CSV files larger than this many bytes, before reading them.
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
    max_data_bytes: u64,
}

/// What a digits checkpoint expects: 64 pixel columns (pixel / 16), classes 0..9.
fn digits_meta() -> CsvMeta {
    CsvMeta {
        file: "digits (embedded)".into(),
        rows: Digits::SAMPLES,
        digest: String::new(),
        header: false,
        features: (1..=Digits::FEATURES)
            .map(|i| format!("column {i}"))
            .collect(),
        label: "label".into(),
        classes: (0..Digits::CLASSES).map(|c| c.to_string()).collect(),
        standardize: None,
        split: Split::Random {
            fraction: Digits::TEST as f64 / Digits::SAMPLES as f64,
            seed: 0,
            train: Digits::TRAIN,
            test: Digits::TEST,
        },
    }
}

pub fn run(args: PredictArgs) -> Result<ExitCode> {
    let ck = Checkpoint::load(&args.checkpoint)?;
    let meta = CsvMeta::read_meta(&ck)?.unwrap_or_else(digits_meta);
    // Read and check the rows before opening a device.
    let bytes = csv::read_bytes(&args.data, args.max_data_bytes)?;
    let first = csv::first_row(&bytes).unwrap_or_default();
    let label = if first.len() == meta.features.len() + 1 {
        if first.contains(&meta.label) {
            LabelColumn::Named(meta.label.clone())
        } else {
            LabelColumn::Last
        }
    } else {
        LabelColumn::None
    };
    let options = csv_options(args.header, label, args.max_data_bytes);
    let table = CsvTable::parse(&bytes, &args.data.display().to_string(), &options)?;
    let x = table.inputs_for(&meta)?;

    let gpu = Gpu::new_blocking()?;
    let trainer = Trainer::from_checkpoint_blocking(&gpu, &ck)?;
    let probs = probabilities(&trainer, &x)?;
    let classes = meta.classes.len();
    let mut rows = Vec::with_capacity(table.rows());
    let mut correct = 0usize;
    for (i, p) in probs.chunks(classes).enumerate() {
        // The first largest, as Trainer::predict breaks ties.
        let k = (0..classes).fold(0, |best, c| if p[c] > p[best] { c } else { best });
        let label = table.label.as_ref().map(|_| table.labels[i].as_str());
        correct += usize::from(label.is_some_and(|l| same_class(l, &meta.classes[k])));
        rows.push((table.lines[i], &meta.classes[k], p[k], label));
    }
    let labelled = table.label.is_some();
    if args.json {
        let predictions: Vec<_> = rows
            .iter()
            .map(|(line, class, p, label)| {
                let mut v = serde_json::json!({"line": line, "class": class, "probability": p});
                if let Some(l) = label {
                    v["label"] = (*l).into();
                }
                v
            })
            .collect();
        let mut out = serde_json::json!({
            "checkpoint": args.checkpoint.display().to_string(),
            "data": args.data.display().to_string(),
            "classes": meta.classes,
            "rows": rows.len(),
            "predictions": predictions,
        });
        if labelled {
            out["correct"] = correct.into();
            out["accuracy"] = (correct as f64 / rows.len() as f64).into();
        }
        println!("{out}");
    } else {
        let mut out = String::from(if labelled {
            "line,class,probability,label\n"
        } else {
            "line,class,probability\n"
        });
        for (line, class, p, label) in &rows {
            out.push_str(&format!("{line},{},{p:.6}", quote(class)));
            if let Some(l) = label {
                out.push_str(&format!(",{}", quote(l)));
            }
            out.push('\n');
        }
        print!("{out}");
        if labelled {
            eprintln!(
                "accuracy   {:.2}% ({correct}/{}) against the label column",
                100.0 * correct as f64 / rows.len() as f64,
                rows.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A label cell names a class (integers compare by value: `07` is class `7`).
fn same_class(cell: &str, class: &str) -> bool {
    match (cell.parse::<i64>(), class.parse::<i64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => cell == class,
    }
}

/// A CSV cell: quoted when it holds a comma, a quote or surrounding blanks.
fn quote(cell: &str) -> String {
    if cell.contains([',', '"', '\n']) || cell.trim() != cell {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

/// Softmax probabilities of every row of `x: (n, features)`, `(n, classes)` row-major:
/// the training model's forward on batches of its batch size (the last one padded with
/// zero rows), logits read back and normalized in f64.
// The Trainer has no logits entry point (Trainer::predict returns classes only), so this
// drives its model directly, as evaluation does; the trainer is not stepped afterwards.
fn probabilities(trainer: &Trainer, x: &[f32]) -> Result<Vec<f32>> {
    let model = trainer.model();
    let (batch, features, classes) = (model.batch(), trainer.features(), trainer.classes());
    let mut out = Vec::with_capacity(x.len() / features * classes);
    let mut rows = vec![0f32; batch * features];
    let labels = vec![0u32; batch];
    for chunk in x.chunks(batch * features) {
        rows.fill(0.0);
        rows[..chunk.len()].copy_from_slice(chunk);
        model.set_batch(&rows, &labels)?;
        model.forward()?;
        let logits = model.read_logits_blocking()?;
        for z in logits.chunks(classes).take(chunk.len() / features) {
            let max = z
                .iter()
                .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let e: Vec<f64> = z.iter().map(|&v| (f64::from(v) - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            out.extend(e.iter().map(|v| (v / sum) as f32));
        }
    }
    Ok(out)
}
