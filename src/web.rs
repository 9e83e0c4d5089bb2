//! The wasm-bindgen surface the browser demo (`web/`) calls. Built only for wasm32.
//!
//! The page trains with the same [`Trainer`] as `halfgrad train`, on the same embedded
//! digits. [`Session::step`] only encodes and submits (no readback), so the page calls it
//! a few times per animation frame; everything that reads from the GPU returns a
//! `Promise`, so the tab never blocks. A [`Session`] owns one open device; after a device
//! loss the page drops it and opens a new one from the last checkpoint. Results cross to
//! JavaScript as JSON strings (one `JSON.parse` on the page), so the surface stays small.

mod bench;
mod csv;

use crate::amp::Precision;
use crate::checkpoint::Checkpoint;
use crate::data::{CsvMeta, Dataset, Digits, InMemory};
use crate::nn::MlpOptions;
use crate::train::{LrSchedule, TrainConfig, Trainer};
use crate::{selfcheck, Gpu, GpuOptions};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, js_sys};

mod gpt;
pub use gpt::GptSession;

/// Runs once when the module loads: Rust panics and `log` records go to the console.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    // A second call (the module instantiated twice) keeps the first logger; harmless.
    let _ = log::set_logger(&CONSOLE_LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// `log` -> the browser console: halfgrad's own records from info up, wgpu's from warn up.
struct ConsoleLogger;
static CONSOLE_LOGGER: ConsoleLogger = ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= log::Level::Warn
            || (meta.target().starts_with("halfgrad") && meta.level() <= log::Level::Info)
    }
    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = JsValue::from_str(&format!("[{}] {}", record.target(), record.args()));
        match record.level() {
            log::Level::Error => web_sys::console::error_1(&text),
            log::Level::Warn => web_sys::console::warn_1(&text),
            _ => web_sys::console::info_1(&text),
        }
    }
    fn flush(&self) {}
}

fn js_error(e: crate::Error) -> JsError {
    JsError::new(&e.to_string())
}

fn js_json(v: serde_json::Value) -> JsValue {
    JsValue::from_str(&v.to_string())
}

/// The trainer slot. An async call takes the trainer out while it awaits and puts it back
/// after, so an overlapping call finds the slot empty and fails with a message instead of
/// racing it (the page runs its calls one at a time anyway).
type Slot = Rc<RefCell<Option<Trainer>>>;

fn no_trainer() -> JsValue {
    JsError::new("no model yet (press Start), or another call is using it").into()
}

/// Runs `f` on the trainer inside a `Promise` that resolves to `f`'s JSON as a string.
fn with_trainer<F>(slot: &Slot, f: F) -> js_sys::Promise
where
    F: AsyncFnOnce(&mut Trainer) -> crate::Result<JsValue> + 'static,
{
    let slot = slot.clone();
    future_to_promise(async move {
        let mut trainer = slot.borrow_mut().take().ok_or_else(no_trainer)?;
        let result = f(&mut trainer).await;
        *slot.borrow_mut() = Some(trainer);
        result.map_err(|e| js_error(e).into())
    })
}

/// What the page shows about a trainer: precision, matrix-product path, policy, model.
fn describe(t: &Trainer) -> JsValue {
    js_json(serde_json::json!({
        "precision": t.config().precision.name(),
        "step": t.steps(),
        "path": format!("{} \u{b7} {}", t.describe_path(), t.policy()),
        "model": t.model().config().to_string(),
        "params": t.num_params(),
        "batch": t.config().batch,
        "schedule": t.config().schedule.to_string(),
        // Where the learning-rate schedule ends: the page pauses there, as the CLI stops.
        "total_steps": match t.config().schedule {
            LrSchedule::WarmupCosine { total, .. } => Some(total),
            LrSchedule::Constant => None,
        },
    }))
}

/// Adapter facts, precision paths and buffer limits, as a JSON object string.
fn device_info(gpu: &Gpu) -> String {
    let caps = gpu.caps();
    let facts = gpu.adapter();
    serde_json::json!({
        "adapter": facts.name,
        "backend": facts.backend,
        "device_type": facts.device_type,
        "driver": facts.driver,
        "driver_info": facts.driver_info,
        "shader_f16": caps.shader_f16,
        "shader_f16_disabled": caps.shader_f16_disabled,
        "f16_path": caps.f16_path(),
        "subgroups": caps.subgroups.map(|(lo, hi)| serde_json::json!({"min": lo, "max": hi})),
        "timestamp_query": caps.timestamps,
        "max_storage_buffer_binding_size": caps.max_storage_buffer_binding_size,
        "max_buffer_size": caps.max_buffer_size,
    })
    .to_string()
}

/// The page's data set: the embedded digits split as the CLI splits them, or a dropped
/// CSV file (then `csv` records what a checkpoint must remember, see web/csv.rs).
struct PageData {
    train: InMemory,
    test: InMemory,
    csv: Option<CsvMeta>,
}

/// The data slot: replaced whole when a CSV file is dropped (and the trainer dropped).
type DataSlot = Rc<RefCell<Rc<PageData>>>;

/// One open WebGPU device and what runs on it: at most one trainer of the digits MLP.
#[wasm_bindgen]
pub struct Session {
    gpu: Gpu,
    trainer: Slot,
    data: DataSlot,
}

#[wasm_bindgen]
impl Session {
    /// Opens the browser's WebGPU adapter. `force_packed` leaves shader-f16 off even when
    /// the adapter has it, so f16 runs the packed-u32 path. Rejects with a message naming
    /// the cause when the browser has no WebGPU or refuses the device.
    pub async fn open(force_packed: bool) -> Result<Session, JsError> {
        let opts = GpuOptions {
            disable_f16: force_packed,
            ..GpuOptions::default()
        };
        let (train, test) = Digits::load().map_err(js_error)?;
        let gpu = Gpu::with_options(opts).await.map_err(js_error)?;
        Ok(Session {
            gpu,
            trainer: Rc::new(RefCell::new(None)),
            data: Rc::new(RefCell::new(Rc::new(PageData {
                train,
                test,
                csv: None,
            }))),
        })
    }

    /// Adapter facts and precision paths, as a JSON object string.
    pub fn info(&self) -> String {
        device_info(&self.gpu)
    }

    /// The GPU cast self-check (every f16 and bf16 pattern round-trips; f32 -> f16/bf16
    /// edge cases and `random` random values match the `half` crate bit for bit).
    /// Resolves to a JSON string `{passed, checks: [{name, checked, mismatches, first}]}`.
    #[wasm_bindgen(js_name = selfCheck)]
    pub fn self_check(&self, random: u32) -> js_sys::Promise {
        let gpu = self.gpu.clone();
        future_to_promise(async move {
            let results = selfcheck::run_all(&gpu, random as usize)
                .await
                .map_err(|e| JsValue::from(js_error(e)))?;
            let passed = results.iter().all(|r| r.passed());
            Ok(js_json(serde_json::json!({
                "passed": passed,
                "checks": results.iter().map(|r| serde_json::json!({
                    "name": r.name,
                    "checked": r.checked,
                    "mismatches": r.mismatches,
                    "first": r.first_mismatches,
                })).collect::<Vec<_>>(),
            })))
        })
    }

    /// Why the device was lost, or `undefined` while it is usable.
    #[wasm_bindgen(js_name = lostReason)]
    pub fn lost_reason(&self) -> Option<String> {
        match self.gpu.check() {
            Err(crate::Error::DeviceLost(why)) => Some(why),
            _ => None,
        }
    }

    /// Destroys the device as a driver reset would (the page's recovery drill).
    #[wasm_bindgen(js_name = simulateDeviceLoss)]
    pub fn simulate_device_loss(&self) {
        self.gpu.simulate_device_loss();
    }

    /// Replaces any trainer with a fresh one: `precision` is `"f16"`, `"bf16"` or
    /// `"f32"`, everything else the CLI's digits defaults, initialised from `seed`.
    /// Resolves to the trainer's description (JSON: precision, path, model, params).
    #[wasm_bindgen(js_name = newTrainer)]
    pub fn new_trainer(&self, precision: &str, seed: u32) -> Result<js_sys::Promise, JsError> {
        let precision: Precision = precision.parse().map_err(js_error)?;
        let mut config = TrainConfig {
            precision,
            seed: u64::from(seed),
            ..TrainConfig::default()
        };
        // A dropped CSV smaller than a batch trains on all its rows, as the CLI does.
        config.batch = config.batch.min(self.data.borrow().train.len()).max(1);
        let (gpu, slot, data) = (
            self.gpu.clone(),
            self.trainer.clone(),
            self.data.borrow().clone(),
        );
        Ok(future_to_promise(async move {
            slot.borrow_mut().take();
            let trainer = Trainer::new(&gpu, config, &MlpOptions::default(), &data.train)
                .await
                .map_err(js_error)?;
            let d = describe(&trainer);
            *slot.borrow_mut() = Some(trainer);
            Ok(d)
        }))
    }

    /// Drops the trainer (Reset).
    #[wasm_bindgen(js_name = dropTrainer)]
    pub fn drop_trainer(&self) {
        self.trainer.borrow_mut().take();
    }

    /// Encodes and submits `n` training steps on the next batches; waits for nothing.
    pub fn step(&self, n: u32) -> Result<(), JsError> {
        let mut slot = self
            .trainer
            .try_borrow_mut()
            .map_err(|_| JsError::new("the trainer is busy"))?;
        let trainer = slot
            .as_mut()
            .ok_or_else(|| JsError::new("no model yet (press Start)"))?;
        let data = self.data.borrow().clone();
        for _ in 0..n {
            trainer.step_from(&data.train).map_err(js_error)?;
        }
        Ok(())
    }

    /// Reads the statistics (one readback). Resolves to JSON: step, loss (`null` before
    /// the first step), loss_scale, skipped_steps, nonfinite_steps, grad_norm.
    pub fn stats(&self) -> js_sys::Promise {
        with_trainer(&self.trainer, async |t: &mut Trainer| {
            let s = t.stats().await?;
            Ok(js_json(serde_json::json!({
                "step": s.step,
                "loss": s.loss,
                "loss_scale": s.loss_scale,
                "skipped_steps": s.skipped_steps,
                "nonfinite_steps": s.nonfinite_steps,
                "grad_norm": s.grad_norm,
                "lr": t.lr(),
            })))
        })
    }

    /// Loss and accuracy on the 360 test digits. Resolves to JSON: loss, accuracy,
    /// correct, total.
    pub fn evaluate(&self) -> js_sys::Promise {
        let data = self.data.borrow().clone();
        with_trainer(&self.trainer, async move |t: &mut Trainer| {
            let e = t.evaluate(&data.test).await?;
            Ok(js_json(serde_json::json!({
                "loss": e.loss,
                "accuracy": e.accuracy,
                "correct": e.correct,
                "total": e.total,
            })))
        })
    }

    /// The first `count` test digits with their labels and the model's predictions.
    /// Resolves to JSON: images (rows of 64 pixels), labels, predictions.
    #[wasm_bindgen(js_name = testDigits)]
    pub fn test_digits(&self, count: u32) -> js_sys::Promise {
        let data = self.data.borrow().clone();
        with_trainer(&self.trainer, async move |t: &mut Trainer| {
            let n = (count as usize).clamp(1, data.test.len());
            let f = data.test.features();
            let x = &data.test.inputs()[..n * f];
            let predictions = t.predict(x).await?;
            Ok(js_json(serde_json::json!({
                "images": x.chunks(f).collect::<Vec<_>>(),
                "labels": &data.test.labels()[..n],
                "predictions": predictions,
            })))
        })
    }

    /// The trainer's checkpoint as safetensors bytes (`halfgrad train --resume` reads it).
    pub fn checkpoint(&self) -> js_sys::Promise {
        let data = self.data.borrow().clone();
        with_trainer(&self.trainer, async move |t: &mut Trainer| {
            let mut ck = t.checkpoint().await?;
            // A CSV model keeps its classes, standardization and split (web/csv.rs).
            if let Some(meta) = &data.csv {
                meta.write_meta(&mut ck)?;
            }
            let bytes = ck.to_bytes()?;
            Ok(js_sys::Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// Replaces any trainer with one restored from checkpoint bytes (a download of this
    /// page or a file the CLI wrote). Resolves to the trainer's description.
    #[wasm_bindgen(js_name = loadCheckpoint)]
    pub fn load_checkpoint(&self, bytes: Vec<u8>) -> js_sys::Promise {
        let (gpu, slot, data) = (
            self.gpu.clone(),
            self.trainer.clone(),
            self.data.borrow().clone(),
        );
        future_to_promise(async move {
            let ck = Checkpoint::from_bytes(&bytes, "the uploaded file").map_err(js_error)?;
            csv::check_checkpoint(&ck, &data).map_err(js_error)?;
            let trainer = Trainer::from_checkpoint(&gpu, &ck)
                .await
                .map_err(js_error)?;
            if trainer.features() != data.train.features()
                || trainer.classes() != data.train.classes()
            {
                return Err(JsError::new(&format!(
                    "this checkpoint holds a model for {} inputs and {} classes; the page's \
                     data has {} inputs and {} classes",
                    trainer.features(),
                    trainer.classes(),
                    data.train.features(),
                    data.train.classes()
                ))
                .into());
            }
            let d = describe(&trainer);
            *slot.borrow_mut() = Some(trainer);
            Ok(d)
        })
    }
}
