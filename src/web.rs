//! The wasm-bindgen surface the browser demo (`web/`) calls. Built only for wasm32.
//!
//! Everything that reads from the GPU returns a `Promise`: the tab never blocks. A
//! [`Session`] owns one open device; after a device loss the page drops it and opens a new
//! one. Results cross to JavaScript as JSON strings (one `JSON.parse` on the page), so the
//! surface stays small and needs no generated TypeScript types.

use crate::{selfcheck, Gpu, GpuOptions};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, js_sys};

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

/// One open WebGPU device and what runs on it.
#[wasm_bindgen]
pub struct Session {
    gpu: Gpu,
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
        let gpu = Gpu::with_options(opts).await.map_err(js_error)?;
        Ok(Session { gpu })
    }

    /// Adapter facts and precision paths, as a JSON object string.
    pub fn info(&self) -> String {
        let caps = self.gpu.caps();
        let facts = self.gpu.adapter();
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
}
