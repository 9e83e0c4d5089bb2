//! Output pieces shared by `halfgrad train` and `halfgrad gpt train`: where text goes,
//! and how the per-tensor overflow counts read in the progress line, the summary and
//! the JSON object.

use indicatif::{ProgressBar, ProgressStyle};

/// Where text goes: nowhere with --json (stdout carries the JSON object only). Each
/// command adds its own header methods in its module.
pub(crate) struct Output {
    pub json: bool,
}

impl Output {
    pub fn text(&self, s: &str) {
        if !self.json {
            println!("{}", s.trim_end());
        }
    }

    /// The progress bar (hidden with --json), starting at `position` of `total` steps.
    pub fn progress_bar(&self, position: u64, total: u64) -> ProgressBar {
        if self.json {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total.max(position));
        bar.set_position(position);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos:>6}/{len} {elapsed_precise} {msg}")
        {
            bar.set_style(style);
        }
        bar
    }
}

/// Parameters whose gradients held an inf or NaN, with the number of steps they did.
pub(crate) type Overflows = [(String, u32)];

/// `1.weight x12, 2.bias x1`.
fn overflow_list(overflows: &Overflows) -> String {
    overflows
        .iter()
        .map(|(name, count)| format!("{name} x{count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The progress line's tail: empty, or `  overflowed: 1.weight x12`.
pub(crate) fn overflow_suffix(overflows: &Overflows) -> String {
    if overflows.is_empty() {
        String::new()
    } else {
        format!("  overflowed: {}", overflow_list(overflows))
    }
}

/// The summary's line (with its newline), or nothing when no gradient overflowed.
pub(crate) fn overflow_summary(overflows: &Overflows) -> String {
    if overflows.is_empty() {
        String::new()
    } else {
        format!(
            "overflows  non-finite gradients (steps): {}\n",
            overflow_list(overflows)
        )
    }
}

/// The JSON `overflow_tensors` object: name -> steps.
pub(crate) fn overflow_json(overflows: &Overflows) -> serde_json::Value {
    overflows
        .iter()
        .map(|(name, count)| (name.clone(), serde_json::json!(count)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
