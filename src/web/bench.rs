//! The browser benchmark's hook (`cargo xtask web-bench`, web/tests/bench.mjs): a trainer
//! of any MLP shape, so steps/s can be measured for more than the demo's default model.
//! Kept in its own file so xtask can add it to an older revision's build unchanged.

use super::{describe, js_error, Session};
use crate::amp::Precision;
use crate::nn::MlpOptions;
use crate::train::{TrainConfig, Trainer};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, js_sys};

#[wasm_bindgen]
impl Session {
    /// Replaces any trainer with one of the digits MLP `64 -> hidden... -> 10`:
    /// `hidden` is a comma-separated list of widths (empty: a linear model) and
    /// `layer_norm` puts a LayerNorm after each hidden Linear; the rest is the CLI's
    /// defaults (batch 64, GELU). Resolves to the trainer's description.
    #[wasm_bindgen(js_name = benchTrainer)]
    pub fn bench_trainer(
        &self,
        precision: &str,
        hidden: &str,
        layer_norm: bool,
    ) -> Result<js_sys::Promise, JsError> {
        let precision: Precision = precision.parse().map_err(js_error)?;
        let hidden = hidden
            .split(',')
            .filter(|w| !w.trim().is_empty())
            .map(|w| {
                w.trim()
                    .parse::<usize>()
                    .map_err(|_| JsError::new(&format!("hidden width `{w}` is not a number")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = TrainConfig {
            precision,
            ..TrainConfig::default()
        };
        let model = MlpOptions {
            hidden,
            layer_norm,
            ..MlpOptions::default()
        };
        let (gpu, slot, data) = (
            self.gpu.clone(),
            self.trainer.clone(),
            self.data.borrow().clone(),
        );
        Ok(future_to_promise(async move {
            slot.borrow_mut().take();
            let trainer = Trainer::new(&gpu, config, &model, &data.train)
                .await
                .map_err(js_error)?;
            let d = describe(&trainer);
            *slot.borrow_mut() = Some(trainer);
            Ok(d)
        }))
    }
}
