//! The library's one error type. Every bad input and every GPU failure comes back as a
//! variant of [`Error`]; library code does not panic on user input.

use crate::DType;

/// Result alias used throughout halfgrad.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No adapter matched (or none exists). The message says what was searched.
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),
    /// The adapter refused the device request.
    #[error("could not open a device on the adapter: {0}")]
    RequestDevice(String),
    /// The device was lost (driver reset, `Device::destroy`, browser tab backgrounded...).
    /// Every call after the loss returns this; build a new `Gpu` to continue.
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// A validation or out-of-memory error reported by wgpu inside an error scope.
    #[error("GPU error in {context}: {message}")]
    Gpu { context: String, message: String },
    /// A composed shader failed to compile into a pipeline.
    #[error("shader for kernel `{kernel}` failed: {message}")]
    Shader { kernel: String, message: String },
    /// An operation needs an adapter feature this device does not have.
    #[error("{op} needs the adapter feature {feature}, which this device lacks")]
    MissingFeature {
        op: &'static str,
        feature: &'static str,
    },
    /// Shapes that must agree do not.
    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    ShapeMismatch {
        op: &'static str,
        expected: String,
        got: String,
    },
    /// A tensor has a dtype the operation does not accept here.
    #[error("{op}: dtype mismatch: expected {expected}, got {got}")]
    DTypeMismatch {
        op: &'static str,
        expected: String,
        got: DType,
    },
    /// Host data does not hold exactly one value per element of the shape.
    #[error("host data has {got} elements but shape {shape:?} needs {expected}")]
    DataLength {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    /// Zero-element tensors (and rank-0 shapes where a matrix is needed) are refused.
    #[error("{what}: empty tensor (shape {shape:?}); every dimension must be at least 1")]
    Empty {
        what: &'static str,
        shape: Vec<usize>,
    },
    /// A buffer would exceed a device limit.
    #[error("{what}: {bytes} bytes exceeds the device limit {limit_name} = {limit} bytes")]
    TooLarge {
        what: &'static str,
        bytes: u64,
        limit_name: &'static str,
        limit: u64,
    },
    /// A model and batch whose planned buffers exceed the adapter's limits or memory
    /// budget, found before anything is allocated ([`SizePlan`](crate::nn::SizePlan)).
    #[error(
        "{tensor} needs {bytes} bytes, over the adapter's {limit_name} of {limit} bytes \
         ({dimension} {value}); {}",
        fits_advice(dimension, *largest)
    )]
    DoesNotFit {
        tensor: String,
        bytes: u64,
        limit_name: &'static str,
        limit: u64,
        /// What can be made smaller: "batch" or "block size".
        dimension: &'static str,
        /// Its value in the refused plan.
        value: usize,
        /// The largest value that fits, when any does.
        largest: Option<usize>,
    },
    /// A class label is outside `0..classes`.
    #[error("label {label} at position {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        index: usize,
        label: u32,
        classes: usize,
    },
    /// An argument is outside its documented range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A checkpoint file is malformed or does not match the model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    /// A named tensor that must be present (optimizer / scaler state on resume) is not.
    #[error("tensor `{name}` is missing")]
    MissingTensor { name: String },
    /// An I/O failure (reading data, writing checkpoints).
    #[error("I/O error on {path}: {message}")]
    Io { path: String, message: String },
    /// A CSV data file that cannot be used: the file, the line to blame (counted from 1
    /// as an editor counts them, the header included) and the column, where there is one.
    #[error("{path}{at}: {problem}", at = csv_location(.row, .column))]
    Csv {
        path: String,
        row: Option<usize>,
        column: Option<String>,
        problem: CsvProblem,
    },
}

/// What is wrong with a CSV data file ([`Error::Csv`] says where).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvProblem {
    #[error("the file is {bytes} bytes, above the limit of {limit} bytes (raise it with --max-data-bytes)")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("the file is empty")]
    Empty,
    #[error("the file is not UTF-8 text")]
    NotText,
    #[error("there is a header but no data row")]
    NoRows,
    #[error("{got} cells, but the first row has {expected}")]
    Ragged { expected: usize, got: usize },
    #[error("a quoted cell is not closed on its line")]
    UnclosedQuote,
    #[error("empty cell (missing values are not supported)")]
    EmptyCell,
    #[error("{cell:?} is not a number")]
    NotNumeric { cell: String },
    #[error("{cell:?} is not a finite number (NaN and infinities are refused)")]
    NotFinite { cell: String },
    #[error("no label column {label:?} (columns: {columns})")]
    NoLabelColumn { label: String, columns: String },
    #[error("no feature column besides the label column")]
    NoFeatures,
    #[error("every row has the label {class:?}: a classifier needs at least two classes")]
    SingleClass { class: String },
    #[error("{classes} classes but only {rows} training rows: every class needs a row")]
    TooManyClasses { classes: usize, rows: usize },
    #[error("label {class:?} is not one of the classes the model knows ({known})")]
    UnknownClass { class: String, known: String },
    #[error("columns {got} do not match the training columns {expected}")]
    ColumnsMismatch { expected: String, got: String },
    #[error("its contents differ from the file the checkpoint was trained on ({expected}); pass that file")]
    Changed { expected: String },
    #[error("a test split of {fraction} leaves {train} training and {test} test rows; both need at least one")]
    BadSplit {
        fraction: String,
        train: usize,
        test: usize,
    },
}

/// `, line N, column C` for [`Error::Csv`] (the parts that are known).
fn csv_location(row: &Option<usize>, column: &Option<String>) -> String {
    let mut at = String::new();
    if let Some(r) = row {
        at.push_str(&format!(", line {r}"));
    }
    if let Some(c) = column {
        at.push_str(&format!(", column {c}"));
    }
    at
}

impl Error {
    pub(crate) fn shape(op: &'static str, expected: impl ToString, got: impl ToString) -> Self {
        Error::ShapeMismatch {
            op,
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }

    /// A resumed run asking for another `what` than the checkpoint at `origin` holds
    /// (`ensure_same` of the run and model settings).
    pub(crate) fn setting_mismatch(origin: &str, what: &str, saved: String, asked: String) -> Self {
        Error::Checkpoint {
            path: origin.to_string(),
            message: format!(
                "{what} mismatch: the checkpoint was trained with {saved}, this run asks for \
                 {asked} (omit the option to continue with the checkpoint's value)"
            ),
        }
    }
}

fn fits_advice(dimension: &str, largest: Option<usize>) -> String {
    match largest {
        Some(n) => format!("the largest {dimension} that fits is {n}"),
        None => format!("not even {dimension} 1 fits: use a smaller model"),
    }
}

/// Parsing a dtype name reports an [`Error`]; the impl lives here, not in `dtype`, so
/// `dtype` (which `Error` names) uses nothing above it.
impl std::str::FromStr for DType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(DType::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "u32" | "uint32" => Ok(DType::U32),
            other => Err(Error::InvalidArgument(format!(
                "unknown dtype `{other}` (expected f32, f16, bf16 or u32)"
            ))),
        }
    }
}
