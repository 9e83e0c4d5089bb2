//! Classification data sets from CSV files: one row per sample, numeric feature columns
//! and one label column (integers or strings).
//!
//! [`CsvTable::parse`] reads the text (comma-separated, `"quoted"` cells with `""`
//! escapes, CRLF or LF, blank lines skipped, a UTF-8 BOM ignored). The header row is
//! detected (the first row is a header when one of its cells is not a number while the
//! cell below it is) or given ([`Header`]). The label column is the last one unless named
//! ([`LabelColumn`]). Every feature cell must be a finite number; every bad cell, ragged
//! row or missing column is an [`Error::Csv`] naming the file, the line and the column,
//! and nothing is kept. Files over [`CsvOptions::max_bytes`] are refused before they are
//! read.
//!
//! [`CsvMeta`] is what a model trained on a CSV must remember: the columns, the class
//! names (sorted: numerically when every label is an integer, else as text), the
//! standardization statistics of the training rows and the train/test split, with a
//! digest of the files so that a resumed run can refuse other contents. It goes into the
//! checkpoint metadata under `data.*` keys ([`CsvMeta::write_meta`]).

use super::{InMemory, SplitMix64};
use crate::checkpoint::Checkpoint;
use crate::error::CsvProblem;
use crate::{Error, Result};

/// Largest CSV file read unless [`CsvOptions::max_bytes`] says otherwise (1 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// Whether the first row names the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Header {
    /// A header when one of the first row's cells is not a number while the cell below
    /// it is (a file whose label column is text keeps working without a header).
    #[default]
    Auto,
    Present,
    Absent,
}

/// Which column holds the labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LabelColumn {
    /// The last column.
    #[default]
    Last,
    /// A header name, or else a column number counted from 1.
    Named(String),
    /// No label column: every column is a feature (rows to predict).
    None,
}

/// How [`CsvTable::parse`] reads a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    pub header: Header,
    pub label: LabelColumn,
    /// Files larger than this are refused before they are read.
    pub max_bytes: u64,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: Header::Auto,
            label: LabelColumn::Last,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// A parsed CSV file: the feature columns as f32 and the label cells as text.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvTable {
    /// The file name used in errors.
    pub path: String,
    /// Whether the first row was a header.
    pub header: bool,
    /// Names of the feature columns (header cells, or `column N` counted from 1).
    pub features: Vec<String>,
    /// The label column's name and index among all columns (`None`: no label column).
    pub label: Option<(String, usize)>,
    /// Feature values, `(rows, features.len())` row-major, every one finite.
    pub values: Vec<f32>,
    /// The label cell of every row, trimmed (empty without a label column).
    pub labels: Vec<String>,
    /// The file line of every row (from 1, the header included), for errors.
    pub lines: Vec<usize>,
    /// A digest of the file's bytes ([`digest`]).
    pub digest: u64,
}

/// A 64-bit digest of `bytes` (SplitMix64's mixer over 8-byte words and the length):
/// tells whether a file changed, not a cryptographic hash.
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h = SplitMix64::mix(bytes.len() as u64 ^ 0x6373_765f_6461_7461);
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = SplitMix64::mix(h ^ u64::from_le_bytes(word)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    }
    h
}

fn csv_error(path: &str, row: Option<usize>, column: Option<String>, problem: CsvProblem) -> Error {
    Error::Csv {
        path: path.to_string(),
        row,
        column,
        problem,
    }
}

/// The bytes of `path`, refused with [`CsvProblem::TooLarge`] before reading when the
/// file is over `max_bytes`. Native only.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_bytes(path: &std::path::Path, max_bytes: u64) -> Result<Vec<u8>> {
    let name = path.display().to_string();
    let io = |e: std::io::Error| Error::Io {
        path: name.clone(),
        message: e.to_string(),
    };
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    if bytes > max_bytes {
        return Err(csv_error(
            &name,
            None,
            None,
            CsvProblem::TooLarge {
                bytes,
                limit: max_bytes,
            },
        ));
    }
    std::fs::read(path).map_err(io)
}

/// The cells of the first non-blank line (`None` for an empty file, non-UTF-8 text or an
/// unclosed quote): enough to tell whether a file has a label column.
pub fn first_row(bytes: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    split_line(line)
}

/// The cells of one line: split at commas outside quotes, quotes removed, `""` kept as
/// one `"`, surrounding blanks trimmed. `None` when a quote is not closed.
fn split_line(line: &str) -> Option<Vec<String>> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cell.trim().is_empty() => {
                cell.clear();
                quoted = true;
            }
            (',', false) => cells.push(std::mem::take(&mut cell).trim().to_string()),
            (c, _) => cell.push(c),
        }
    }
    if quoted {
        return None;
    }
    cells.push(cell.trim().to_string());
    Some(cells)
}

/// A feature cell as a finite f32, or the problem with it.
fn number(cell: &str) -> std::result::Result<f32, CsvProblem> {
    if cell.is_empty() {
        return Err(CsvProblem::EmptyCell);
    }
    match cell.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(CsvProblem::NotFinite {
            cell: cell.to_string(),
        }),
        Err(_) => Err(CsvProblem::NotNumeric {
            cell: cell.to_string(),
        }),
    }
}

impl CsvTable {
    /// Reads and parses `path`, refusing a file over `options.max_bytes` before reading
    /// it. Native only (the browser hands the bytes to [`CsvTable::parse`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(path: &std::path::Path, options: &CsvOptions) -> Result<CsvTable> {
        let bytes = read_bytes(path, options.max_bytes)?;
        CsvTable::parse(&bytes, &path.display().to_string(), options)
    }

    /// Parses the bytes of a CSV file called `path` (see the module docs).
    pub fn parse(bytes: &[u8], path: &str, options: &CsvOptions) -> Result<CsvTable> {
        let err = |row, column, problem| csv_error(path, row, column, problem);
        if bytes.len() as u64 > options.max_bytes {
            return Err(err(
                None,
                None,
                CsvProblem::TooLarge {
                    bytes: bytes.len() as u64,
                    limit: options.max_bytes,
                },
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| err(None, None, CsvProblem::NotText))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // (line number from 1, cells) of every non-blank line.
        let mut rows = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
            .filter(|(_, l)| !l.trim().is_empty());
        let split = |(line, text): (usize, &str)| {
            split_line(text)
                .map(|cells| (line, cells))
                .ok_or_else(|| err(Some(line), None, CsvProblem::UnclosedQuote))
        };
        let Some(first) = rows.next().map(split).transpose()? else {
            return Err(err(None, None, CsvProblem::Empty));
        };
        let second = rows.next().map(split).transpose()?;
        let header = match options.header {
            Header::Present => true,
            Header::Absent => false,
            Header::Auto => match &second {
                Some((_, below)) => first
                    .1
                    .iter()
                    .zip(below)
                    .any(|(a, b)| number(a).is_err() && number(b).is_ok()),
                None => first.1.iter().any(|c| number(c).is_err()),
            },
        };
        let width = first.1.len();
        let names: Vec<String> = if header {
            first.1.clone()
        } else {
            (1..=width).map(|i| format!("column {i}")).collect()
        };
        let describe = |j: usize| {
            if header {
                format!("{} ({:?})", j + 1, names[j])
            } else {
                format!("{}", j + 1)
            }
        };
        let label = match &options.label {
            LabelColumn::None => None,
            LabelColumn::Last => Some(width - 1),
            LabelColumn::Named(want) => {
                let by_name = names.iter().position(|n| n == want);
                let by_number = want
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| (1..=width).contains(&n))
                    .map(|n| n - 1);
                match by_name.or(by_number) {
                    Some(j) => Some(j),
                    None => {
                        return Err(err(
                            None,
                            None,
                            CsvProblem::NoLabelColumn {
                                label: want.clone(),
                                columns: names.join(", "),
                            },
                        ))
                    }
                }
            }
        };
        if label.is_some() && width < 2 {
            return Err(err(None, None, CsvProblem::NoFeatures));
        }
        let features: Vec<String> = (0..width)
            .filter(|&j| Some(j) != label)
            .map(|j| names[j].clone())
            .collect();

        let mut table = CsvTable {
            path: path.to_string(),
            header,
            features,
            label: label.map(|j| (names[j].clone(), j)),
            values: Vec::new(),
            labels: Vec::new(),
            lines: Vec::new(),
            digest: digest(bytes),
        };
        let data_rows = (!header)
            .then_some(Ok(first))
            .into_iter()
            .chain(second.map(Ok))
            .chain(rows.map(split));
        for row in data_rows {
            let (line, cells) = row?;
            if cells.len() != width {
                return Err(err(
                    Some(line),
                    None,
                    CsvProblem::Ragged {
                        expected: width,
                        got: cells.len(),
                    },
                ));
            }
            for (j, cell) in cells.into_iter().enumerate() {
                if Some(j) == label {
                    if cell.is_empty() {
                        return Err(err(Some(line), Some(describe(j)), CsvProblem::EmptyCell));
                    }
                    table.labels.push(cell);
                } else {
                    let v = number(&cell).map_err(|p| err(Some(line), Some(describe(j)), p))?;
                    table.values.push(v);
                }
            }
            table.lines.push(line);
        }
        if table.lines.is_empty() {
            return Err(err(None, None, CsvProblem::NoRows));
        }
        Ok(table)
    }

    /// Number of data rows.
    pub fn rows(&self) -> usize {
        self.lines.len()
    }

    /// Feature row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let f = self.features.len();
        &self.values[i * f..(i + 1) * f]
    }

    fn error(&self, row: Option<usize>, column: Option<String>, problem: CsvProblem) -> Error {
        csv_error(&self.path, row, column, problem)
    }

    /// The feature values of the rows `rows`, in that order, standardized if asked.
    // returns: (rows.len(), features) row-major
    fn gather(&self, rows: &[usize], standardize: Option<&Standardizer>) -> Vec<f32> {
        let mut x = Vec::with_capacity(rows.len() * self.features.len());
        for &i in rows {
            x.extend_from_slice(self.row(i));
        }
        if let Some(s) = standardize {
            s.apply(&mut x);
        }
        x
    }

    /// The class index of every row in `rows`; a label outside `classes` is an error at
    /// its line.
    fn class_indices(&self, rows: &[usize], classes: &[String]) -> Result<Vec<u32>> {
        let Some((name, j)) = &self.label else {
            return Err(self.error(
                None,
                None,
                CsvProblem::NoLabelColumn {
                    label: "(none)".into(),
                    columns: self.features.join(", "),
                },
            ));
        };
        let numeric = classes.iter().all(|c| c.parse::<i64>().is_ok());
        rows.iter()
            .map(|&i| {
                let cell = canonical_label(&self.labels[i], numeric);
                classes
                    .iter()
                    .position(|c| *c == cell)
                    .map(|k| k as u32)
                    .ok_or_else(|| {
                        self.error(
                            Some(self.lines[i]),
                            Some(format!("{} ({name:?})", j + 1)),
                            CsvProblem::UnknownClass {
                                class: self.labels[i].clone(),
                                known: classes.join(", "),
                            },
                        )
                    })
            })
            .collect()
    }

    /// Checks that this file has the feature columns `expected` (by name when both
    /// have a header, else by count).
    pub fn ensure_features(&self, expected: &[String], expected_header: bool) -> Result<()> {
        let same = if self.header && expected_header {
            self.features == expected
        } else {
            self.features.len() == expected.len()
        };
        if same {
            return Ok(());
        }
        Err(self.error(
            None,
            None,
            CsvProblem::ColumnsMismatch {
                expected: format!("[{}]", expected.join(", ")),
                got: format!("[{}]", self.features.join(", ")),
            },
        ))
    }

    /// The feature rows as model inputs: standardized with `meta`'s statistics.
    // returns: (rows, features) row-major
    pub fn inputs_for(&self, meta: &CsvMeta) -> Result<Vec<f32>> {
        self.ensure_features(&meta.features, meta.header)?;
        let all: Vec<usize> = (0..self.rows()).collect();
        Ok(self.gather(&all, meta.standardize.as_ref()))
    }
}

/// A label as it is compared: integers in canonical form (`07` is `7`) when every class
/// is an integer, else the text as written.
fn canonical_label(cell: &str, numeric: bool) -> String {
    match cell.parse::<i64>() {
        Ok(v) if numeric => v.to_string(),
        _ => cell.to_string(),
    }
}

/// The sorted distinct labels of some tables: numerically when all are integers.
fn class_names(labels: &[&String]) -> Vec<String> {
    let ints: Option<Vec<i64>> = labels.iter().map(|l| l.parse().ok()).collect();
    match ints {
        Some(mut v) => {
            v.sort_unstable();
            v.dedup();
            v.iter().map(|i| i.to_string()).collect()
        }
        None => {
            let mut v: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
            v.sort_unstable();
            v.dedup();
            v
        }
    }
}

/// Per-feature mean and standard deviation of the training rows (population std, f64
/// sums; a constant column gets std 1 so it maps to 0).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standardizer {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Statistics of `x: (n, features)` row-major, n >= 1.
    pub fn fit(x: &[f32], features: usize) -> Standardizer {
        let n = (x.len() / features.max(1)).max(1) as f64;
        let mut mean = vec![0f64; features];
        let mut sq = vec![0f64; features];
        for row in x.chunks(features) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        for row in x.chunks(features) {
            for ((s, &v), m) in sq.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(v) - m).powi(2);
            }
        }
        let std = sq
            .iter()
            .map(|&s| {
                let sd = (s / n).sqrt();
                if sd > 0.0 && sd.is_finite() {
                    sd as f32
                } else {
                    1.0
                }
            })
            .collect();
        Standardizer {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        }
    }

    /// `(x - mean) / std` per column, in place.
    // x: (n, features) row-major
    pub fn apply(&self, x: &mut [f32]) {
        for row in x.chunks_mut(self.mean.len().max(1)) {
            for ((v, &m), &s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = ((f64::from(*v) - f64::from(m)) / f64::from(s)) as f32;
            }
        }
    }
}

/// Where the test rows come from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Split {
    /// A seeded shuffle of the data file's rows; the first `test` rows of it (kept in file
    /// order) are the test set, the rest the training set.
    Random {
        fraction: f64,
        seed: u64,
        train: usize,
        test: usize,
    },
    /// Every row of the data file trains; the test rows are a second file.
    TestFile {
        file: String,
        rows: usize,
        digest: String,
    },
}

impl Split {
    /// The (train, test) row indices of a data file of `rows` rows under a random split.
    fn random_rows(rows: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
        let mut order: Vec<usize> = (0..rows).collect();
        SplitMix64::new(seed).shuffle(&mut order);
        let test = ((rows as f64 * fraction).round() as usize).min(rows);
        let (mut te, mut tr) = (order[..test].to_vec(), order[test..].to_vec());
        te.sort_unstable();
        tr.sort_unstable();
        (tr, te)
    }
}

/// How to pick the test rows of a new run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitPlan<'a> {
    /// A seeded random fraction of the data file.
    Fraction(f64),
    /// A second file.
    TestFile(&'a CsvTable),
}

/// What a model trained on a CSV file remembers (see the module docs).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CsvMeta {
    /// The data file as it was named.
    pub file: String,
    /// Its data rows and [`digest`] (hex).
    pub rows: usize,
    pub digest: String,
    /// Whether it had a header.
    pub header: bool,
    /// Feature column names, in order.
    pub features: Vec<String>,
    /// The label column's name.
    pub label: String,
    /// Class names; class `k` is `classes[k]`.
    pub classes: Vec<String>,
    /// Standardization statistics of the training rows (`None`: inputs as they are).
    pub standardize: Option<Standardizer>,
    /// The train/test split.
    pub split: Split,
}

/// Metadata keys of [`CsvMeta::write_meta`].
pub mod key {
    pub const SOURCE: &str = "data.source";
    pub const FILE: &str = "data.file";
    pub const CLASSES: &str = "data.classes";
    pub const STANDARDIZE: &str = "data.standardize";
    pub const SPLIT: &str = "data.split";
}

/// Training and test sets made from CSV files, and what made them.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvData {
    pub train: InMemory,
    pub test: InMemory,
    pub meta: CsvMeta,
}

/// The fixed seed of [`SplitPlan::Fraction`]: the split does not move with `--seed`.
pub const SPLIT_SEED: u64 = 0;

impl CsvMeta {
    /// The record of a new run on `data`: classes from every labelled row (test file
    /// included), the split, and standardization statistics of the training rows when
    /// `standardize`.
    pub fn new(data: &CsvTable, plan: SplitPlan<'_>, standardize: bool) -> Result<CsvMeta> {
        let (split, train_rows) = match plan {
            SplitPlan::Fraction(fraction) => {
                let (tr, te) = Split::random_rows(data.rows(), fraction, SPLIT_SEED);
                if tr.is_empty() || te.is_empty() || !(0.0..1.0).contains(&fraction) {
                    return Err(data.error(
                        None,
                        None,
                        CsvProblem::BadSplit {
                            fraction: fraction.to_string(),
                            train: tr.len(),
                            test: te.len(),
                        },
                    ));
                }
                let split = Split::Random {
                    fraction,
                    seed: SPLIT_SEED,
                    train: tr.len(),
                    test: te.len(),
                };
                (split, tr)
            }
            SplitPlan::TestFile(test) => {
                test.ensure_features(&data.features, data.header)?;
                let split = Split::TestFile {
                    file: test.path.clone(),
                    rows: test.rows(),
                    digest: format!("{:016x}", test.digest),
                };
                (split, (0..data.rows()).collect())
            }
        };
        let mut labels: Vec<&String> = data.labels.iter().collect();
        if let SplitPlan::TestFile(test) = plan {
            labels.extend(&test.labels);
        }
        let classes = class_names(&labels);
        let label = match &data.label {
            Some((name, _)) => name.clone(),
            None => {
                return Err(data.error(
                    None,
                    None,
                    CsvProblem::NoLabelColumn {
                        label: "(none)".into(),
                        columns: data.features.join(", "),
                    },
                ))
            }
        };
        if classes.len() < 2 {
            let class = classes.first().cloned().unwrap_or_default();
            return Err(data.error(None, None, CsvProblem::SingleClass { class }));
        }
        if classes.len() > train_rows.len() {
            return Err(data.error(
                None,
                None,
                CsvProblem::TooManyClasses {
                    classes: classes.len(),
                    rows: train_rows.len(),
                },
            ));
        }
        let standardize = standardize
            .then(|| Standardizer::fit(&data.gather(&train_rows, None), data.features.len()));
        Ok(CsvMeta {
            file: data.path.clone(),
            rows: data.rows(),
            digest: format!("{:016x}", data.digest),
            header: data.header,
            features: data.features.clone(),
            label,
            classes,
            standardize,
            split,
        })
    }

    /// The training and test sets this record describes, from `data` (and `test` for a
    /// [`Split::TestFile`]). Refuses files whose contents differ from the recorded ones.
    pub fn build(&self, data: &CsvTable, test: Option<&CsvTable>) -> Result<CsvData> {
        let changed = |t: &CsvTable, rows: usize, digest: &str, file: &str| {
            if t.rows() != rows || format!("{:016x}", t.digest) != digest {
                return Err(t.error(
                    None,
                    None,
                    CsvProblem::Changed {
                        expected: format!("{file}: {rows} rows, digest {digest}"),
                    },
                ));
            }
            Ok(())
        };
        changed(data, self.rows, &self.digest, &self.file)?;
        data.ensure_features(&self.features, self.header)?;
        let std = self.standardize.as_ref();
        let set = |t: &CsvTable, rows: &[usize]| {
            let x = t.gather(rows, std);
            let y = t.class_indices(rows, &self.classes)?;
            InMemory::new(x, y, self.features.len(), self.classes.len())
        };
        let (train, test) = match &self.split {
            Split::Random { fraction, seed, .. } => {
                let (tr, te) = Split::random_rows(data.rows(), *fraction, *seed);
                (set(data, &tr)?, set(data, &te)?)
            }
            Split::TestFile { file, rows, digest } => {
                let Some(t) = test else {
                    return Err(Error::InvalidArgument(format!(
                        "{}: this run's test rows are the file {file}; pass it with --test",
                        self.file
                    )));
                };
                changed(t, *rows, digest, file)?;
                t.ensure_features(&self.features, self.header)?;
                let all: Vec<usize> = (0..data.rows()).collect();
                let all_test: Vec<usize> = (0..t.rows()).collect();
                (set(data, &all)?, set(t, &all_test)?)
            }
        };
        Ok(CsvData {
            train,
            test,
            meta: self.clone(),
        })
    }

    /// Refuses a data file (its bytes) other than the one this record was made from.
    pub fn ensure_file(&self, bytes: &[u8], path: &str) -> Result<()> {
        if format!("{:016x}", digest(bytes)) == self.digest {
            return Ok(());
        }
        Err(csv_error(
            path,
            None,
            None,
            CsvProblem::Changed {
                expected: format!("{}: {} rows, digest {}", self.file, self.rows, self.digest),
            },
        ))
    }

    /// Adds the `data.*` entries to a checkpoint about to be saved.
    pub fn write_meta(&self, ck: &mut Checkpoint) -> Result<()> {
        fn json<T: serde::Serialize>(v: &T) -> Result<String> {
            serde_json::to_string(v)
                .map_err(|e| Error::InvalidArgument(format!("data metadata: {e}")))
        }
        ck.set_meta(key::SOURCE, "csv");
        let file = serde_json::json!({
            "file": self.file,
            "rows": self.rows,
            "digest": self.digest,
            "header": self.header,
            "features": self.features,
            "label": self.label,
        });
        ck.set_meta(key::FILE, file);
        ck.set_meta(key::CLASSES, json(&self.classes)?);
        ck.set_meta(key::STANDARDIZE, json(&self.standardize)?);
        ck.set_meta(key::SPLIT, json(&self.split)?);
        Ok(())
    }

    /// The record in a checkpoint's metadata: `None` when it was not trained on a CSV
    /// file, an [`Error::Checkpoint`] when the entries are damaged.
    pub fn read_meta(ck: &Checkpoint) -> Result<Option<CsvMeta>> {
        if ck.metadata.get(key::SOURCE).map(String::as_str) != Some("csv") {
            return Ok(None);
        }
        let bad = |k: &str, e: serde_json::Error| Error::Checkpoint {
            path: ck.origin().to_string(),
            message: format!("metadata `{k}`: {e}"),
        };
        #[derive(serde::Deserialize)]
        struct File {
            file: String,
            rows: usize,
            digest: String,
            header: bool,
            features: Vec<String>,
            label: String,
        }
        let f: File = serde_json::from_str(ck.meta(key::FILE)?).map_err(|e| bad(key::FILE, e))?;
        let meta = CsvMeta {
            file: f.file,
            rows: f.rows,
            digest: f.digest,
            header: f.header,
            features: f.features,
            label: f.label,
            classes: serde_json::from_str(ck.meta(key::CLASSES)?)
                .map_err(|e| bad(key::CLASSES, e))?,
            standardize: serde_json::from_str(ck.meta(key::STANDARDIZE)?)
                .map_err(|e| bad(key::STANDARDIZE, e))?,
            split: serde_json::from_str(ck.meta(key::SPLIT)?).map_err(|e| bad(key::SPLIT, e))?,
        };
        Ok(Some(meta))
    }
}
