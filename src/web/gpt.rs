//! The GPT page's wasm-bindgen surface ([`GptSession`]): the same [`GptTrainer`] as
//! `halfgrad gpt train`, on a text the page hands over (the shipped corpus it fetches,
//! or the user's file).
//!
//! As for the digits, [`GptSession::step`] only encodes and submits, and everything that
//! reads the GPU returns a `Promise`. A model that does not fit the adapter's buffer
//! limits is refused by [`check_fits`] before anything is allocated. Checkpoints cross as
//! safetensors bytes (`halfgrad gpt train --resume` reads them) and as the Hugging Face
//! GPT-2 layout (config.json + model.safetensors).

use super::{device_info, js_error, js_json};
use crate::amp::Precision;
use crate::checkpoint::Checkpoint;
use crate::data::text::{Split, TextData};
use crate::nn::gpt::{check_fits, hf, GptConfig, SampleConfig};
use crate::train::{GptTrainConfig, GptTrainer, LrSchedule};
use crate::{Gpu, GpuOptions};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, js_sys};

/// The largest text the page takes (64 MiB): the module holds it once beside the
/// page's copy, inside wasm32's 4 GiB memory, and a text this size is weeks of training
/// for the presets anyway. Larger files are refused, never cut.
pub const MAX_TEXT_BYTES: usize = 64 << 20;

/// A model preset of the page.
struct WebPreset {
    name: &'static str,
    about: &'static str,
    config: GptConfig,
    batch: usize,
    /// Learning-rate schedule length (the page pauses there).
    steps: u64,
    lr: f32,
}

/// tiny: the CLI's default model, batch and learning rate (software adapters, phones); small: a middle size for
/// integrated GPUs; shakespeare-char: nanoGPT's size for desktop GPUs.
const PRESETS: [WebPreset; 3] = [
    WebPreset {
        name: "tiny",
        about: "2 layers, 4 heads, width 64, context 64, batch 8: software adapters, phones",
        config: GptConfig::tiny(),
        batch: 8,
        steps: 2000,
        lr: 6e-3,
    },
    WebPreset {
        name: "small",
        about: "4 layers, 4 heads, width 128, context 128, batch 32: integrated GPUs",
        config: GptConfig {
            vocab: 256,
            block: 128,
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
        },
        batch: 32,
        steps: 3000,
        lr: 2e-3,
    },
    WebPreset {
        name: "shakespeare-char",
        about: "nanoGPT's shakespeare-char: 6 layers, 6 heads, width 384, context 256, \
                batch 64: desktop GPUs",
        config: GptConfig::shakespeare_char(),
        batch: 64,
        steps: 5000,
        lr: 1e-3,
    },
];

fn preset(name: &str) -> Result<&'static WebPreset, JsError> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        JsError::new(&format!(
            "unknown preset `{name}` (presets: {})",
            names.join(", ")
        ))
    })
}

/// Estimated GPU bytes of a training run, before building it: f32 masters, gradients
/// and Adam moments plus the 16-bit copies (16 + 2 bytes per parameter, 16 in f32), and
/// twice the forward activations (their gradients take about as much): per layer the
/// f32 residual stream (2 adds) and 16 C-wide rows in the activation dtype (LayerNorms,
/// qkv, attention output, projections, the 4C hidden layer before and after GELU), the
/// attention probabilities (B, H, T, T); once the f32 scores and the logits.
fn estimate_bytes(c: &GptConfig, batch: usize, precision: Precision) -> u64 {
    let s = precision.compute_dtype().size_bytes() as u64;
    let p = c.num_params() as u64;
    let low = if precision == Precision::F32 { 0 } else { s };
    let (b, t, h, e, v) = (
        batch as u64,
        c.block as u64,
        c.n_head as u64,
        c.n_embd as u64,
        c.vocab as u64,
    );
    let rows = b * t;
    let square = b * h * t * t;
    let per_layer = rows * e * (2 * 4 + 16 * s) + square * s;
    let activations = c.n_layer as u64 * per_layer + square * 4 + rows * v * (s + 4);
    p * (16 + low) + 2 * activations
}

/// The bytes of the text the page trains on, with its name.
struct Text {
    name: String,
    bytes: Vec<u8>,
}

/// The trainer and the text it trains on (its windows match the model's block).
struct Run {
    trainer: GptTrainer,
    data: TextData,
}

type Slot = Rc<RefCell<Option<Run>>>;

fn no_run() -> JsValue {
    JsError::new("no model yet (press Start), or another call is using it").into()
}

/// Runs `f` on the run inside a `Promise`; the run is out of its slot while `f` awaits.
fn with_run<F>(slot: &Slot, f: F) -> js_sys::Promise
where
    F: AsyncFnOnce(&mut Run) -> crate::Result<JsValue> + 'static,
{
    let slot = slot.clone();
    future_to_promise(async move {
        let mut run = slot.borrow_mut().take().ok_or_else(no_run)?;
        let result = f(&mut run).await;
        *slot.borrow_mut() = Some(run);
        result.map_err(|e| js_error(e).into())
    })
}

/// What the page shows about a run.
fn describe(run: &Run) -> JsValue {
    let t = &run.trainer;
    let c = t.config();
    let m = t.memory();
    js_json(serde_json::json!({
        "precision": c.precision.name(),
        "step": t.steps(),
        "path": format!("{} \u{b7} {}", t.describe_path(), t.policy()),
        "model": c.model.to_string(),
        "block": c.model.block,
        "params": t.num_params(),
        "batch": c.batch,
        "tokens_per_step": t.tokens_per_step(),
        "eval_windows": c.eval_windows,
        "memory_bytes": m.total(),
        "memory": m.summary_line(),
        "schedule": c.schedule.to_string(),
        "total_steps": match c.schedule {
            LrSchedule::WarmupCosine { total, .. } => Some(total),
            LrSchedule::Constant => None,
        },
        "text": run.data.name(),
        "text_bytes": run.data.len(),
    }))
}

/// A text as [`TextData`] for a block size, refused (not cut) past [`MAX_TEXT_BYTES`].
fn text_data(text: &Text, block: usize) -> crate::Result<TextData> {
    check_text_size(&text.name, text.bytes.len())?;
    TextData::from_bytes(text.name.clone(), text.bytes.clone(), block)
}

fn check_text_size(name: &str, len: usize) -> crate::Result<()> {
    if len > MAX_TEXT_BYTES {
        return Err(crate::Error::InvalidArgument(format!(
            "{name}: {len} bytes is larger than the {MAX_TEXT_BYTES} bytes (64 MiB) this page \
             trains on; train on it natively with `halfgrad gpt train --data FILE`, or use a \
             part of it"
        )));
    }
    Ok(())
}

/// One open WebGPU device, the text, and at most one GPT run on them.
#[wasm_bindgen]
pub struct GptSession {
    gpu: Gpu,
    text: Rc<RefCell<Option<Text>>>,
    run: Slot,
}

#[wasm_bindgen]
impl GptSession {
    /// Opens the browser's WebGPU adapter with its own buffer limits (see
    /// [`Gpu::with_options`]); `force_packed` leaves shader-f16 off.
    pub async fn open(force_packed: bool) -> Result<GptSession, JsError> {
        let opts = GpuOptions {
            disable_f16: force_packed,
            ..GpuOptions::default()
        };
        let gpu = Gpu::with_options(opts).await.map_err(js_error)?;
        Ok(GptSession {
            gpu,
            text: Rc::new(RefCell::new(None)),
            run: Rc::new(RefCell::new(None)),
        })
    }

    /// Adapter facts, precision paths and buffer limits (JSON string).
    pub fn info(&self) -> String {
        device_info(&self.gpu)
    }

    /// The largest text accepted, in bytes.
    #[wasm_bindgen(js_name = maxTextBytes)]
    pub fn max_text_bytes() -> usize {
        MAX_TEXT_BYTES
    }

    /// The presets (JSON array): name, about, model fields, batch, steps, parameters,
    /// estimated GPU bytes per precision, and `fits`: per precision `null` or the
    /// message naming the buffer limit the run would pass.
    pub fn presets(&self) -> String {
        let list: Vec<_> = PRESETS
            .iter()
            .map(|p| {
                let per = |f: &dyn Fn(Precision) -> serde_json::Value| {
                    serde_json::json!({
                        "f16": f(Precision::F16),
                        "bf16": f(Precision::BF16),
                        "f32": f(Precision::F32),
                    })
                };
                let fits = |pr: Precision| match check_fits(
                    &self.gpu,
                    &p.config,
                    p.batch,
                    p.config.block,
                    pr.compute_dtype(),
                ) {
                    Ok(()) => serde_json::Value::Null,
                    Err(e) => e.to_string().into(),
                };
                serde_json::json!({
                    "name": p.name,
                    "about": p.about,
                    "model": p.config.to_string(),
                    "layers": p.config.n_layer,
                    "heads": p.config.n_head,
                    "embd": p.config.n_embd,
                    "block": p.config.block,
                    "batch": p.batch,
                    "steps": p.steps,
                    "params": p.config.num_params(),
                    "memory_bytes": per(&|pr| estimate_bytes(&p.config, p.batch, pr).into()),
                    "fits": per(&fits),
                })
            })
            .collect();
        serde_json::Value::Array(list).to_string()
    }

    /// Sets the text later runs train on (the run in progress keeps its own). Resolves
    /// nothing; throws for an empty text or one past [`MAX_TEXT_BYTES`]. Returns JSON:
    /// name, bytes, distinct (byte values), train and validation split sizes.
    #[wasm_bindgen(js_name = setText)]
    pub fn set_text(&self, name: String, bytes: Vec<u8>) -> Result<String, JsError> {
        check_text_size(&name, bytes.len()).map_err(js_error)?;
        if bytes.is_empty() {
            return Err(JsError::new(&format!("{name}: the file is empty")));
        }
        let mut seen = [false; 256];
        bytes.iter().for_each(|&b| seen[b as usize] = true);
        let train = bytes.len() * 9 / 10;
        let info = serde_json::json!({
            "name": name,
            "bytes": bytes.len(),
            "distinct": seen.iter().filter(|&&s| s).count(),
            "train_bytes": train,
            "validation_bytes": bytes.len() - train,
        })
        .to_string();
        *self.text.borrow_mut() = Some(Text { name, bytes });
        Ok(info)
    }

    /// Why the device was lost, or `undefined` while it is usable.
    #[wasm_bindgen(js_name = lostReason)]
    pub fn lost_reason(&self) -> Option<String> {
        match self.gpu.check() {
            Err(crate::Error::DeviceLost(why)) => Some(why),
            _ => None,
        }
    }

    /// Destroys the device as a driver reset would (the recovery drill).
    #[wasm_bindgen(js_name = simulateDeviceLoss)]
    pub fn simulate_device_loss(&self) {
        self.gpu.simulate_device_loss();
    }

    /// Replaces any run with a fresh one: `preset` by name, `precision` `"f16"`, `"bf16"`
    /// or `"f32"`, `batch` and `steps` 0 for the preset's, `eval_windows` validation
    /// windows per evaluation (0: the CLI's 64; fewer evaluate sooner on a software
    /// adapter, each batch of windows being a forward pass). The model is checked against
    /// the adapter's buffer limits first (a refusal names the tensor and the limit) and
    /// the text against the block. Resolves to the run's description (JSON).
    #[wasm_bindgen(js_name = newTrainer)]
    pub fn new_trainer(
        &self,
        preset_name: &str,
        precision: &str,
        seed: u32,
        batch: u32,
        steps: u32,
        eval_windows: u32,
    ) -> Result<js_sys::Promise, JsError> {
        let p = preset(preset_name)?;
        let precision: Precision = precision.parse().map_err(js_error)?;
        let batch = if batch == 0 { p.batch } else { batch as usize };
        let steps = if steps == 0 {
            p.steps
        } else {
            u64::from(steps)
        };
        let mut config = GptTrainConfig::tiny(steps);
        config.model = p.config;
        config.precision = precision;
        config.batch = batch;
        config.lr = p.lr;
        config.seed = u64::from(seed);
        if eval_windows > 0 {
            config.eval_windows = eval_windows as usize;
        }
        check_fits(
            &self.gpu,
            &config.model,
            batch,
            config.model.block,
            precision.compute_dtype(),
        )
        .map_err(|e| JsError::new(&format!("preset {}: {e}", p.name)))?;
        let data = {
            let text = self.text.borrow();
            let text = text
                .as_ref()
                .ok_or_else(|| JsError::new("no text yet: load the corpus or pick a file"))?;
            text_data(text, config.model.block).map_err(js_error)?
        };
        let (gpu, slot) = (self.gpu.clone(), self.run.clone());
        Ok(future_to_promise(async move {
            slot.borrow_mut().take();
            let trainer = GptTrainer::new(&gpu, config, None).map_err(js_error)?;
            let run = Run { trainer, data };
            let d = describe(&run);
            *slot.borrow_mut() = Some(run);
            Ok(d)
        }))
    }

    /// Drops the run (Reset).
    #[wasm_bindgen(js_name = dropTrainer)]
    pub fn drop_trainer(&self) {
        self.run.borrow_mut().take();
    }

    /// Encodes and submits `n` training steps; waits for nothing.
    pub fn step(&self, n: u32) -> Result<(), JsError> {
        let mut slot = self
            .run
            .try_borrow_mut()
            .map_err(|_| JsError::new("the trainer is busy"))?;
        let run = slot
            .as_mut()
            .ok_or_else(|| JsError::new("no model yet (press Start)"))?;
        for _ in 0..n {
            run.trainer.step(&run.data).map_err(js_error)?;
        }
        Ok(())
    }

    /// Reads the statistics (one readback). Resolves to JSON: step, loss, loss_scale,
    /// skipped_steps, nonfinite_steps, grad_norm, lr, tokens_per_step.
    pub fn stats(&self) -> js_sys::Promise {
        with_run(&self.run, async |run: &mut Run| {
            let s = run.trainer.stats().await?;
            Ok(js_json(serde_json::json!({
                "step": s.step,
                "loss": s.loss,
                "loss_scale": s.loss_scale,
                "skipped_steps": s.skipped_steps,
                "nonfinite_steps": s.nonfinite_steps,
                "grad_norm": s.grad_norm,
                "lr": run.trainer.trainer().lr(),
                "tokens_per_step": run.trainer.tokens_per_step(),
            })))
        })
    }

    /// Mean validation loss over the run's evaluation windows (as the CLI's
    /// evaluations). Resolves to JSON: loss, windows, tokens.
    pub fn evaluate(&self) -> js_sys::Promise {
        with_run(&self.run, async |run: &mut Run| {
            let e = run.trainer.evaluate(&run.data, Split::Validation).await?;
            Ok(js_json(serde_json::json!({
                "loss": e.loss,
                "windows": e.windows,
                "tokens": e.tokens,
            })))
        })
    }

    /// Generates `tokens` bytes after `prompt` (temperature, top-k 40, `seed`). Resolves
    /// to the generated bytes (Uint8Array; the page decodes them as UTF-8 text).
    pub fn sample(
        &self,
        prompt: Vec<u8>,
        tokens: u32,
        temperature: f32,
        seed: u32,
    ) -> js_sys::Promise {
        let how = SampleConfig {
            temperature,
            ..SampleConfig::default()
        };
        with_run(&self.run, async move |run: &mut Run| {
            let out = run
                .trainer
                .sample(&prompt, tokens as usize, &how, u64::from(seed))
                .await?;
            Ok(js_sys::Uint8Array::from(out.as_slice()).into())
        })
    }

    /// The run's checkpoint as safetensors bytes (`halfgrad gpt train --resume` reads it).
    pub fn checkpoint(&self) -> js_sys::Promise {
        with_run(&self.run, async |run: &mut Run| {
            let bytes = run.trainer.checkpoint(&run.data).await?.to_bytes()?;
            Ok(js_sys::Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// The weights in the Hugging Face GPT-2 layout: resolves to `[config.json text,
    /// model.safetensors bytes]`.
    #[wasm_bindgen(js_name = exportHf)]
    pub fn export_hf(&self) -> js_sys::Promise {
        with_run(&self.run, async |run: &mut Run| {
            let (config, weights) = hf::to_files(&run.trainer.weights().await?)?;
            let pair = js_sys::Array::new();
            pair.push(&JsValue::from_str(&config));
            pair.push(&js_sys::Uint8Array::from(weights.as_slice()).into());
            Ok(pair.into())
        })
    }

    /// Replaces any run with one restored from checkpoint bytes (this page's download or
    /// the CLI's file). The current text must be as long as the one the checkpoint was
    /// trained on (the data position is a step count over it). Resolves to the run's
    /// description.
    #[wasm_bindgen(js_name = loadCheckpoint)]
    pub fn load_checkpoint(&self, bytes: Vec<u8>) -> js_sys::Promise {
        let (gpu, slot, text) = (self.gpu.clone(), self.run.clone(), self.text.clone());
        future_to_promise(async move {
            let fail = |e: crate::Error| -> JsValue { js_error(e).into() };
            let ck = Checkpoint::from_bytes(&bytes, "the uploaded file").map_err(fail)?;
            let config = GptTrainer::config_of(&ck).map_err(fail)?;
            let trained_on = GptTrainer::data_len_of(&ck).map_err(fail)?;
            let data = {
                let text = text.borrow();
                let text = text.as_ref().ok_or_else(|| {
                    JsValue::from(JsError::new("no text yet: load the corpus or pick a file"))
                })?;
                if text.bytes.len() != trained_on {
                    return Err(JsError::new(&format!(
                        "this checkpoint was trained on a text of {trained_on} bytes ({}); \
                         the page holds {} ({} bytes): load that text first",
                        ck.meta("data.name").unwrap_or("unnamed"),
                        text.name,
                        text.bytes.len()
                    ))
                    .into());
                }
                text_data(text, config.model.block).map_err(fail)?
            };
            check_fits(
                &gpu,
                &config.model,
                config.batch,
                config.model.block,
                config.precision.compute_dtype(),
            )
            .map_err(fail)?;
            slot.borrow_mut().take();
            let trainer = GptTrainer::from_checkpoint(&gpu, &ck).await.map_err(fail)?;
            let run = Run { trainer, data };
            let d = describe(&run);
            *slot.borrow_mut() = Some(run);
            Ok(d)
        })
    }
}
