//! Word layouts of the small GPU state buffers that Rust and WGSL share: the loss
//! scaler's state, the optimizer's work words and the hyperparameter words.
//!
//! These tables are the one source of truth. The kernel composer injects them into every
//! shader that asks for them (`//!use state_words`) as `const SCALER_SCALE: u32 = 0u;`
//! lines ([`wgsl_constants`]), so a shader never spells a word index itself. The scaler
//! (amp) and the optimizer (optim) both sit above this module.

/// Word indices of the scaler state buffer (u32 words; f32 values stored as bits).
/// WGSL names: `SCALER_<NAME>`.
pub mod scaler {
    /// f32: the current loss scale. Other kernels bind the buffer as `array<f32>` and
    /// read element 0.
    pub const SCALE: usize = 0;
    /// u32: consecutive clean steps since the scale last changed.
    pub const GROWTH_TRACKER: usize = 1;
    /// u32: steps skipped because the gradients were non-finite.
    pub const SKIPPED: usize = 2;
    /// u32: steps whose gradients were non-finite (skipped or not).
    pub const NONFINITE: usize = 3;
    /// u32: 1 when the latest step was skipped.
    pub const LAST_SKIPPED: usize = 4;
    /// u32: optimizer steps that were not skipped (AdamW's bias-correction count).
    pub const STEP: usize = 5;
    /// f32: global L2 norm of the latest step's unscaled gradient, before clipping.
    pub const LAST_NORM: usize = 6;
    /// Words read by `stats` and saved by `state`.
    pub const USED: usize = 7;
    /// Words allocated (64 bytes).
    pub const ALLOCATED: usize = 16;
}

/// Word indices of the optimizer's work buffer (u32 words, f32 as bits). BC1 / BC2
/// persist across steps (checkpointed); the others are written by `adam/finalize` for
/// this step's update kernels. WGSL names: `WORK_<NAME>`.
pub mod work {
    /// u32: 1 when this step is skipped.
    pub const SKIP: usize = 0;
    /// f32: factor applied to the unscaled gradient (global-norm clipping).
    pub const CLIP_COEF: usize = 1;
    /// f32: lr / bc1.
    pub const STEP_SIZE: usize = 2;
    /// f32: sqrt(bc2).
    pub const BC2_SQRT: usize = 3;
    /// f32: 1 - lr * weight_decay.
    pub const DECAY: usize = 4;
    /// f32: 1 - beta1^step.
    pub const BC1: usize = 5;
    /// f32: 1 - beta2^step.
    pub const BC2: usize = 6;
    /// Words allocated.
    pub const ALLOCATED: usize = 8;
}

/// Word indices of the hyperparameter buffer (f32). LR is rewritten by `set_lr`.
/// WGSL names: `HYPER_<NAME>`.
pub mod hyper {
    pub const LR: usize = 0;
    pub const BETA1: usize = 1;
    pub const BETA2: usize = 2;
    pub const EPS: usize = 3;
    pub const WEIGHT_DECAY: usize = 4;
    /// 0: no clipping.
    pub const MAX_NORM: usize = 5;
    /// Words allocated.
    pub const ALLOCATED: usize = 8;
}

// The words the host reads and saves fit the allocation.
const _: () = assert!(scaler::USED <= scaler::ALLOCATED);

/// Every word a shader may name, as (WGSL name, index). Only indices: the `ALLOCATED` /
/// `USED` sizes are host-side.
pub const WORDS: &[(&str, usize)] = &[
    ("SCALER_SCALE", scaler::SCALE),
    ("SCALER_GROWTH_TRACKER", scaler::GROWTH_TRACKER),
    ("SCALER_SKIPPED", scaler::SKIPPED),
    ("SCALER_NONFINITE", scaler::NONFINITE),
    ("SCALER_LAST_SKIPPED", scaler::LAST_SKIPPED),
    ("SCALER_STEP", scaler::STEP),
    ("SCALER_LAST_NORM", scaler::LAST_NORM),
    ("WORK_SKIP", work::SKIP),
    ("WORK_CLIP_COEF", work::CLIP_COEF),
    ("WORK_STEP_SIZE", work::STEP_SIZE),
    ("WORK_BC2_SQRT", work::BC2_SQRT),
    ("WORK_DECAY", work::DECAY),
    ("WORK_BC1", work::BC1),
    ("WORK_BC2", work::BC2),
    ("HYPER_LR", hyper::LR),
    ("HYPER_BETA1", hyper::BETA1),
    ("HYPER_BETA2", hyper::BETA2),
    ("HYPER_EPS", hyper::EPS),
    ("HYPER_WEIGHT_DECAY", hyper::WEIGHT_DECAY),
    ("HYPER_MAX_NORM", hyper::MAX_NORM),
];

/// [`WORDS`] as WGSL module-scope constants, one `const NAME: u32 = Nu;` per line.
pub fn wgsl_constants() -> String {
    let mut out = String::from("// State-buffer words, generated from halfgrad::layout.\n");
    for (name, index) in WORDS {
        out.push_str(&format!("const {name}: u32 = {index}u;\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fit_their_buffers_and_do_not_overlap() {
        for (prefix, size) in [
            ("SCALER_", scaler::USED),
            ("WORK_", work::ALLOCATED),
            ("HYPER_", hyper::ALLOCATED),
        ] {
            let mut seen = Vec::new();
            for (name, i) in WORDS.iter().filter(|(n, _)| n.starts_with(prefix)) {
                assert!(*i < size, "{name} = {i} past {size}");
                assert!(!seen.contains(i), "{name} reuses word {i}");
                seen.push(*i);
            }
        }
    }
}
