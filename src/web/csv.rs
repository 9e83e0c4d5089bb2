//! The page's own-data entry points: a dropped CSV file is parsed here, in Rust, by the
//! same code as `halfgrad train --data` (src/data/csv.rs), so a bad file gets the CLI's
//! message (file, line, column). Kept apart from src/web.rs, which only grew a data slot.

use super::{js_error, PageData, Session};
use crate::checkpoint::Checkpoint;
use crate::data::csv::{CsvOptions, LabelColumn, SplitPlan};
use crate::data::{CsvMeta, CsvTable, Dataset, Digits};
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// Largest CSV file the page reads (it holds the bytes, the table and the data set).
const MAX_PAGE_CSV_BYTES: u64 = 256 << 20;

/// The page's data set as JSON: source, rows, features, classes, label.
fn describe_data(d: &PageData) -> String {
    let (source, label, classes) = match &d.csv {
        Some(m) => (m.file.clone(), Some(m.label.clone()), m.classes.clone()),
        None => (
            "digits".to_string(),
            None,
            (0..Digits::CLASSES).map(|c| c.to_string()).collect(),
        ),
    };
    serde_json::json!({
        "source": source,
        "label": label,
        "train_rows": d.train.len(),
        "test_rows": d.test.len(),
        "features": d.train.features(),
        "classes": classes,
        "standardized": d.csv.as_ref().is_some_and(|m| m.standardize.is_some()),
    })
    .to_string()
}

/// Refuses a checkpoint trained on other data than the page's (classes or columns).
pub(super) fn check_checkpoint(ck: &Checkpoint, data: &PageData) -> crate::Result<()> {
    let saved = CsvMeta::read_meta(ck)?;
    let same = match (&saved, &data.csv) {
        (None, None) => true,
        (Some(a), Some(b)) => a.classes == b.classes && a.features == b.features,
        _ => false,
    };
    if same {
        return Ok(());
    }
    let name = |m: &Option<CsvMeta>| {
        m.as_ref().map_or("the digits".to_string(), |m| {
            format!("{} ({})", m.file, m.classes.join(", "))
        })
    };
    Err(crate::Error::Checkpoint {
        path: ck.origin().to_string(),
        message: format!(
            "trained on {}; the page holds {}: load that data first",
            name(&saved),
            name(&data.csv)
        ),
    })
}

#[wasm_bindgen]
impl Session {
    /// Replaces the data set with a CSV file's (`bytes`, named `name`) and drops the
    /// trainer: `label` a header name or a column number from 1 (empty: the last column),
    /// `test_split` the held-out fraction, `standardize` as `--standardize`. Returns the
    /// data set's description (JSON: source, train_rows, test_rows, features, classes);
    /// throws the CLI's message for a bad file, and then keeps the previous data.
    #[wasm_bindgen(js_name = loadCsv)]
    pub fn load_csv(
        &self,
        bytes: Vec<u8>,
        name: &str,
        label: &str,
        test_split: f64,
        standardize: bool,
    ) -> Result<String, JsError> {
        let options = CsvOptions {
            label: match label.trim() {
                "" => LabelColumn::Last,
                l => LabelColumn::Named(l.to_string()),
            },
            max_bytes: MAX_PAGE_CSV_BYTES,
            ..CsvOptions::default()
        };
        let table = CsvTable::parse(&bytes, name, &options).map_err(js_error)?;
        let meta =
            CsvMeta::new(&table, SplitPlan::Fraction(test_split), standardize).map_err(js_error)?;
        let data = meta.build(&table, None).map_err(js_error)?;
        let page = PageData {
            train: data.train,
            test: data.test,
            csv: Some(data.meta),
        };
        let d = describe_data(&page);
        self.trainer.borrow_mut().take();
        *self.data.borrow_mut() = Rc::new(page);
        Ok(d)
    }

    /// Back to the embedded digits (drops the trainer). Returns the data description.
    #[wasm_bindgen(js_name = useDigits)]
    pub fn use_digits(&self) -> Result<String, JsError> {
        let (train, test) = Digits::load().map_err(js_error)?;
        let page = PageData {
            train,
            test,
            csv: None,
        };
        let d = describe_data(&page);
        self.trainer.borrow_mut().take();
        *self.data.borrow_mut() = Rc::new(page);
        Ok(d)
    }

    /// The page's data set (JSON, as `loadCsv` returns it).
    #[wasm_bindgen(js_name = dataInfo)]
    pub fn data_info(&self) -> String {
        describe_data(&self.data.borrow())
    }
}
