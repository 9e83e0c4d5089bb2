//! `halfgrad train --data FILE.csv`: the options that pick the data set, loading it (or
//! the embedded digits), the per-class report, and the `data.*` checkpoint entries that
//! let `--resume` and `halfgrad predict` rebuild the same inputs.

use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::csv::{
    self, CsvOptions, Header, LabelColumn, Split, SplitPlan, DEFAULT_MAX_BYTES,
};
use halfgrad::data::{CsvMeta, CsvTable, Dataset, Digits, InMemory};
use halfgrad::train::{TrainConfig, Trainer};
use halfgrad::{Error, Result};
use std::path::{Path, PathBuf};

/// Test fraction of `--data` when neither `--test` nor `--test-split` is given.
const DEFAULT_TEST_SPLIT: f64 = 0.2;

#[derive(clap::Args)]
pub struct DataArgs {
    /// Train on this CSV file instead of the embedded digits: one row per sample,
    /// numeric feature columns and a label column (integers or text).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The label column of --data: a header name or a column number counted from 1
    /// [default: the last column].
    #[arg(long, requires = "data")]
    label: Option<String>,
    /// Whether the first row of the CSV files is a header: true or false [default:
    /// detected].
    #[arg(long, requires = "data")]
    header: Option<bool>,
    /// Test rows from this CSV file (same columns as --data) instead of a split of --data.
    #[arg(long, requires = "data", conflicts_with = "test_split")]
    test: Option<PathBuf>,
    /// Fraction of the --data rows held out as the test set, chosen by a fixed seeded
    /// shuffle (recorded in the checkpoint) [default: 0.2].
    #[arg(long, requires = "data")]
    test_split: Option<f64>,
    /// Standardize every feature with the training rows' mean and std (stored in the
    /// checkpoint): true or false [default: true].
    #[arg(long, requires = "data")]
    standardize: Option<bool>,
    /// Refuse CSV files larger than this many bytes, before reading them.
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
    max_data_bytes: u64,
}

/// Where the training and test sets came from.
pub enum Source {
    Digits,
    Csv(Box<CsvMeta>),
}

/// The data set of a run.
pub struct Loaded {
    pub train: InMemory,
    pub test: InMemory,
    pub source: Source,
}

/// Reading options for a CSV file.
pub fn csv_options(header: Option<bool>, label: LabelColumn, max_bytes: u64) -> CsvOptions {
    CsvOptions {
        header: match header {
            None => Header::Auto,
            Some(true) => Header::Present,
            Some(false) => Header::Absent,
        },
        label,
        max_bytes,
    }
}

impl DataArgs {
    /// The data set of a new run, or of the run saved in `resume` (its classes,
    /// standardization and split, after checking the files are the ones it trained on).
    pub fn load(&self, resume: Option<&Path>) -> Result<Loaded> {
        let recorded = match resume {
            Some(path) => CsvMeta::read_meta(&Checkpoint::load(path)?)?,
            None => None,
        };
        let Some(path) = &self.data else {
            if let (Some(meta), Some(ck)) = (&recorded, resume) {
                return Err(Error::InvalidArgument(format!(
                    "{} was trained on the CSV file {}: pass it again with --data",
                    ck.display(),
                    meta.file
                )));
            }
            let (train, test) = Digits::load()?;
            return Ok(Loaded {
                train,
                test,
                source: Source::Digits,
            });
        };
        if let (None, Some(ck)) = (&recorded, resume) {
            return Err(Error::InvalidArgument(format!(
                "{} was trained on the embedded digits, not on a CSV file: omit --data",
                ck.display()
            )));
        }
        let label = self
            .label
            .clone()
            .or_else(|| recorded.as_ref().map(|m| m.label.clone()))
            .map_or(LabelColumn::Last, LabelColumn::Named);
        let options = csv_options(self.header, label, self.max_data_bytes);
        let bytes = csv::read_bytes(path, self.max_data_bytes)?;
        if let Some(meta) = &recorded {
            // Other contents are refused before they are parsed (the columns may differ).
            meta.ensure_file(&bytes, &path.display().to_string())?;
        }
        let table = CsvTable::parse(&bytes, &path.display().to_string(), &options)?;
        let test = match &self.test {
            Some(p) => Some(CsvTable::read(p, &options)?),
            None => None,
        };
        let meta = match recorded {
            Some(meta) => {
                self.ensure_same(&meta, resume.unwrap_or(Path::new("")))?;
                meta
            }
            None => {
                let plan = match &test {
                    Some(t) => SplitPlan::TestFile(t),
                    None => SplitPlan::Fraction(self.test_split.unwrap_or(DEFAULT_TEST_SPLIT)),
                };
                CsvMeta::new(&table, plan, self.standardize.unwrap_or(true))?
            }
        };
        let data = meta.build(&table, test.as_ref())?;
        Ok(Loaded {
            train: data.train,
            test: data.test,
            source: Source::Csv(Box::new(data.meta)),
        })
    }

    /// Refuses data options that contradict the resumed run's record.
    fn ensure_same(&self, meta: &CsvMeta, ck: &Path) -> Result<()> {
        let mismatch = |what: &str, saved: String, asked: String| {
            Err(Error::Checkpoint {
                path: ck.display().to_string(),
                message: format!(
                    "{what} mismatch: the checkpoint was trained with {saved}, this run asks \
                     for {asked} (omit the option to continue with the checkpoint's value)"
                ),
            })
        };
        if let Some(label) = &self.label {
            if *label != meta.label {
                return mismatch("label column", meta.label.clone(), label.clone());
            }
        }
        if let Some(s) = self.standardize {
            if s != meta.standardize.is_some() {
                let saved = meta.standardize.is_some().to_string();
                return mismatch("--standardize", saved, s.to_string());
            }
        }
        match (&meta.split, self.test_split, &self.test) {
            (Split::Random { fraction, .. }, Some(f), _) if f != *fraction => {
                mismatch("--test-split", fraction.to_string(), f.to_string())
            }
            (Split::Random { fraction, .. }, _, Some(t)) => mismatch(
                "test set",
                format!("--test-split {fraction}"),
                format!("--test {}", t.display()),
            ),
            (Split::TestFile { file, .. }, Some(f), _) => mismatch(
                "test set",
                format!("--test {file}"),
                format!("--test-split {f}"),
            ),
            _ => Ok(()),
        }
    }
}

impl Source {
    /// The data set's name in the header line (`digits`, or the CSV file).
    pub fn name(&self) -> &str {
        match self {
            Source::Digits => "digits",
            Source::Csv(m) => &m.file,
        }
    }

    /// A line on the CSV columns, classes, standardization and split (none for digits).
    pub fn details(&self) -> Option<String> {
        let Source::Csv(m) = self else {
            return None;
        };
        let split = match &m.split {
            Split::Random { fraction, seed, .. } => {
                format!("test rows: {fraction} of the file, a seeded shuffle (seed {seed})")
            }
            Split::TestFile { file, .. } => format!("test rows: {file}"),
        };
        Some(format!(
            "columns    label {:?} (classes {}), {} features {}; {split}",
            m.label,
            m.classes.join(", "),
            m.features.len(),
            if m.standardize.is_some() {
                "standardized with the training rows' mean and std"
            } else {
                "as they are"
            },
        ))
    }

    /// A CSV run without `--batch` on fewer training rows than the default batch uses
    /// them all in every step (the digits' runs are unchanged).
    pub fn fit_batch(
        &self,
        mut config: TrainConfig,
        batch: Option<usize>,
        train: &InMemory,
    ) -> TrainConfig {
        if matches!(self, Source::Csv(_)) && batch.is_none() {
            config.batch = config.batch.min(train.len()).max(1);
        }
        config
    }

    /// Writes the trainer's checkpoint to `path` with this data set's `data.*` entries.
    pub fn save(&self, trainer: &Trainer, path: &Path) -> Result<()> {
        match self {
            Source::Digits => trainer.save(path),
            Source::Csv(meta) => {
                let mut ck = trainer.checkpoint_blocking()?;
                meta.write_meta(&mut ck)?;
                ck.save(path)
            }
        }
    }

    /// Test accuracy per class (CSV runs only): text lines and a JSON array.
    pub fn per_class(
        &self,
        trainer: &Trainer,
        test: &InMemory,
    ) -> Result<Option<(String, serde_json::Value)>> {
        let Source::Csv(meta) = self else {
            return Ok(None);
        };
        let predicted = trainer.predict_blocking(test.inputs())?;
        let mut correct = vec![0usize; meta.classes.len()];
        let mut total = vec![0usize; meta.classes.len()];
        for (&p, &y) in predicted.iter().zip(test.labels()) {
            total[y as usize] += 1;
            correct[y as usize] += usize::from(p == y);
        }
        let width = meta.classes.iter().map(|c| c.len()).max().unwrap_or(0);
        let mut text = String::new();
        let mut json = Vec::new();
        for (k, name) in meta.classes.iter().enumerate() {
            let pct = if total[k] > 0 {
                format!("{:.2}%", 100.0 * correct[k] as f64 / total[k] as f64)
            } else {
                "no test rows".to_string()
            };
            text.push_str(&format!(
                "class      {name:<width$}  {:>5}/{:<5} {pct}\n",
                correct[k], total[k]
            ));
            json.push(serde_json::json!({"class": name, "correct": correct[k], "total": total[k]}));
        }
        Ok(Some((text, serde_json::Value::Array(json))))
    }

    /// The `data` entry of `halfgrad train --json`.
    pub fn json(&self, train: &InMemory, test: &InMemory) -> serde_json::Value {
        let mut v = serde_json::json!({
            "source": self.name(),
            "train_rows": train.len(),
            "test_rows": test.len(),
            "features": train.features(),
        });
        if let Source::Csv(m) = self {
            v["label"] = m.label.clone().into();
            v["classes"] = m.classes.clone().into();
            v["standardized"] = m.standardize.is_some().into();
        }
        v
    }
}
