//! Dynamic loss scaling with PyTorch `GradScaler` semantics, resident on the GPU.
//!
//! The scale, the clean-step counter, the step counters and the latest gradient norm live
//! in one small GPU storage buffer (the *scaler state*); the found-inf flag is the
//! [`OverflowFlag`]. A training step reads none of them on the host: the backward seeds
//! the loss gradient with the scale read on the GPU ([`LossScaler::scale_buffer`]), the
//! optimizer unscales and skips on the GPU, and the update kernel grows or backs off the
//! scale on the GPU. The host reads the state only when it asks ([`LossScaler::stats`]).
//!
//! The update rule is `torch._amp_update_scale_`:
//!
//! ```text
//! if found_inf: scale = max(scale * backoff_factor, min_scale); tracker = 0
//! else:
//!     tracker += 1
//!     if tracker == growth_interval:
//!         if isfinite(scale * growth_factor): scale = min(scale * growth_factor, max_scale)
//!         tracker = 0
//! ```
//!
//! `min_scale` / `max_scale` are optional additions (a floor keeps a run whose scale
//! would collapse to 0 alive); without them the sequence is PyTorch's exactly.

use super::{OverflowFlag, Precision};
use crate::checkpoint::state::{
    find_f32_scalar, find_u32_scalar, fmt_opt_f32, parse_kv, parse_kv_opt_f32, StateTensor,
};
use crate::kernels::Dispatch;
use crate::ops::loss_scale::{self, UpdateParams};
use crate::{Error, Gpu, Result};

/// Word indices of the scaler state buffer (the table lives in [`crate::layout`]).
pub(crate) use crate::layout::scaler as word;

/// How the loss scale evolves. [`Default`] is PyTorch's `GradScaler()`; see
/// [`ScalerConfig::for_precision`] for the per-precision default.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalerConfig {
    /// Scale the loss, grow and back off. When false the scale is 1.0 and stays 1.0.
    pub enabled: bool,
    /// Initial scale (PyTorch: 2^16).
    pub init_scale: f32,
    /// Factor applied after `growth_interval` consecutive clean steps (PyTorch: 2.0).
    pub growth_factor: f32,
    /// Factor applied after a step with non-finite gradients (PyTorch: 0.5).
    pub backoff_factor: f32,
    /// Consecutive clean steps before the scale grows (PyTorch: 2000).
    pub growth_interval: u32,
    /// Optional floor: the scale never backs off below it.
    pub min_scale: Option<f32>,
    /// Optional ceiling: the scale never grows above it.
    pub max_scale: Option<f32>,
    /// Only for a DISABLED scaler: whether a step with non-finite gradients is skipped.
    ///
    /// Default `false`, as PyTorch: with `GradScaler(enabled=False)` `scaler.step` just
    /// calls `optimizer.step()`, so a non-finite gradient reaches the weights. The step is
    /// still counted in [`OptimStats::nonfinite_steps`] so the host can see it. Set it to
    /// `true` to get the enabled scaler's protection (skip the whole step, weights and
    /// moments untouched) without scaling, e.g. for BF16 runs that occasionally produce
    /// an inf. An enabled scaler always skips.
    pub skip_nonfinite_when_disabled: bool,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig {
            enabled: true,
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            min_scale: None,
            max_scale: None,
            skip_nonfinite_when_disabled: false,
        }
    }
}

impl ScalerConfig {
    /// PyTorch's defaults, enabled for F16 (whose gradients underflow without scaling)
    /// and disabled for BF16 and F32 (f32's exponent range; enable explicitly if wanted).
    pub fn for_precision(precision: Precision) -> Self {
        ScalerConfig {
            enabled: precision == Precision::F16,
            ..Default::default()
        }
    }

    /// A disabled scaler: scale 1.0, no skipping.
    pub fn disabled() -> Self {
        ScalerConfig {
            enabled: false,
            ..Default::default()
        }
    }

    /// Whether a step with non-finite gradients is skipped.
    pub fn skips_nonfinite(&self) -> bool {
        self.enabled || self.skip_nonfinite_when_disabled
    }

    /// Checks the ranges PyTorch checks, plus the floor and ceiling.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("loss scaler: {m}")));
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if !positive(self.init_scale) {
            return bad(format!(
                "init_scale {} must be finite and > 0",
                self.init_scale
            ));
        }
        if !(self.growth_factor.is_finite() && self.growth_factor > 1.0) {
            return bad(format!("growth_factor {} must be > 1", self.growth_factor));
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return bad(format!(
                "backoff_factor {} must be in (0, 1)",
                self.backoff_factor
            ));
        }
        if self.growth_interval == 0 {
            return bad("growth_interval must be at least 1".into());
        }
        let lo = self.min_scale.unwrap_or(0.0);
        let hi = self.max_scale.unwrap_or(f32::MAX);
        if let Some(m) = self.min_scale {
            if !positive(m) {
                return bad(format!("min_scale {m} must be finite and > 0"));
            }
        }
        if let Some(m) = self.max_scale {
            if !positive(m) {
                return bad(format!("max_scale {m} must be finite and > 0"));
            }
        }
        if lo > hi || self.init_scale < lo || self.init_scale > hi {
            return bad(format!(
                "need min_scale <= init_scale <= max_scale, got {lo} <= {} <= {hi}",
                self.init_scale
            ));
        }
        Ok(())
    }

    /// The configuration as string key/values (`scaler.enabled`, `scaler.init_scale`,
    /// ...) for checkpoint metadata. Floats are written so that they parse back exactly.
    pub fn to_kv(&self) -> Vec<(String, String)> {
        vec![
            ("scaler.enabled".into(), self.enabled.to_string()),
            ("scaler.init_scale".into(), format!("{:?}", self.init_scale)),
            (
                "scaler.growth_factor".into(),
                format!("{:?}", self.growth_factor),
            ),
            (
                "scaler.backoff_factor".into(),
                format!("{:?}", self.backoff_factor),
            ),
            (
                "scaler.growth_interval".into(),
                self.growth_interval.to_string(),
            ),
            ("scaler.min_scale".into(), fmt_opt_f32(self.min_scale)),
            ("scaler.max_scale".into(), fmt_opt_f32(self.max_scale)),
            (
                "scaler.skip_nonfinite_when_disabled".into(),
                self.skip_nonfinite_when_disabled.to_string(),
            ),
        ]
    }

    /// Reads [`ScalerConfig::to_kv`]'s keys over `self` (absent keys keep their value;
    /// other keys are ignored) and validates the result.
    pub fn with_kv(mut self, kv: &[(String, String)]) -> Result<Self> {
        if let Some(v) = parse_kv(kv, "scaler.enabled")? {
            self.enabled = v;
        }
        if let Some(v) = parse_kv(kv, "scaler.init_scale")? {
            self.init_scale = v;
        }
        if let Some(v) = parse_kv(kv, "scaler.growth_factor")? {
            self.growth_factor = v;
        }
        if let Some(v) = parse_kv(kv, "scaler.backoff_factor")? {
            self.backoff_factor = v;
        }
        if let Some(v) = parse_kv(kv, "scaler.growth_interval")? {
            self.growth_interval = v;
        }
        if let Some(v) = parse_kv_opt_f32(kv, "scaler.min_scale")? {
            self.min_scale = v;
        }
        if let Some(v) = parse_kv_opt_f32(kv, "scaler.max_scale")? {
            self.max_scale = v;
        }
        if let Some(v) = parse_kv(kv, "scaler.skip_nonfinite_when_disabled")? {
            self.skip_nonfinite_when_disabled = v;
        }
        self.validate()?;
        Ok(self)
    }
}

/// Scaler and optimizer statistics, read from the GPU on demand (one readback).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimStats {
    /// The loss scale the next step will use (1.0 when the scaler is disabled).
    pub scale: f32,
    /// Consecutive clean steps since the scale last changed (PyTorch's growth tracker).
    pub growth_tracker: u32,
    /// Steps skipped because of non-finite gradients.
    pub skipped_steps: u32,
    /// Steps whose gradients were non-finite, skipped or not (equal to `skipped_steps`
    /// unless the scaler is disabled without `skip_nonfinite_when_disabled`).
    pub nonfinite_steps: u32,
    /// Optimizer steps taken (not skipped): the count Adam's bias correction uses.
    pub steps: u32,
    /// Global L2 norm of the latest step's unscaled gradient, before clipping (inf or
    /// NaN when that step's gradients were non-finite).
    pub last_grad_norm: f32,
    /// Whether the latest step was skipped.
    pub last_step_skipped: bool,
}

/// The scaler state's words, as the host sees them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Words(pub [u32; word::USED]);

impl Words {
    fn stats(&self) -> OptimStats {
        let w = &self.0;
        OptimStats {
            scale: f32::from_bits(w[word::SCALE]),
            growth_tracker: w[word::GROWTH_TRACKER],
            skipped_steps: w[word::SKIPPED],
            nonfinite_steps: w[word::NONFINITE],
            steps: w[word::STEP],
            last_grad_norm: f32::from_bits(w[word::LAST_NORM]),
            last_step_skipped: w[word::LAST_SKIPPED] != 0,
        }
    }
}

/// Dynamic loss scaling on the GPU (PyTorch `GradScaler` semantics).
///
/// # A training step
///
/// ```text
/// let mut enc = gpu.encoder("step");
/// scaler.clear_flag(&mut enc);          // 1. outside any compute pass: found-inf = 0
/// {
///     let mut pass = enc.begin_compute_pass(..);
///     // 2. forward; the loss backward seeds dlogits with scale_buffer()[0] / batch;
///     //    backward kernels that store 16-bit values raise flag() on overflow
///     adamw.encode_step(&mut pass);     // 3. check, finalize, AdamW, scale update
/// }
/// gpu.submit(enc.finish())?;            // 4. nothing is read back
/// ```
///
/// # A disabled scaler
///
/// The scale is 1.0 and stays 1.0 (so the loss seed is unscaled) and the growth tracker
/// stays 0. Non-finite gradients are still detected and counted
/// ([`OptimStats::nonfinite_steps`]) but, as in PyTorch, the step is not skipped unless
/// [`ScalerConfig::skip_nonfinite_when_disabled`] is set: matching PyTorch keeps an F32 or
/// BF16 run's trajectory identical to the reference, and the count still lets a trainer
/// notice and stop.
///
/// One scaler serves one optimizer: the optimizer's step count lives in its state.
/// Clones share the GPU state.
#[derive(Debug, Clone)]
pub struct LossScaler {
    gpu: Gpu,
    config: ScalerConfig,
    state: wgpu::Buffer,
    flag: OverflowFlag,
    update: Dispatch,
}

impl LossScaler {
    /// A scaler with its own found-inf flag. Layers that store 16-bit activations or
    /// activation gradients bind [`LossScaler::flag`]; build the scaler before them.
    pub fn new(gpu: &Gpu, config: ScalerConfig) -> Result<LossScaler> {
        LossScaler::with_flag(gpu, config, OverflowFlag::new(gpu)?)
    }

    /// [`ScalerConfig::for_precision`].
    pub fn for_precision(gpu: &Gpu, precision: Precision) -> Result<LossScaler> {
        LossScaler::new(gpu, ScalerConfig::for_precision(precision))
    }

    /// A scaler that uses an existing found-inf flag (one the layers already bind).
    pub fn with_flag(gpu: &Gpu, config: ScalerConfig, flag: OverflowFlag) -> Result<LossScaler> {
        config.validate()?;
        let state = gpu.scoped("allocating the loss-scaler state", || {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("halfgrad loss scaler"),
                size: (word::ALLOCATED * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let mut init = [0u32; word::ALLOCATED];
        init[word::SCALE] = if config.enabled {
            config.init_scale
        } else {
            1.0
        }
        .to_bits();
        gpu.queue()
            .write_buffer(&state, 0, bytemuck::cast_slice(&init));
        let params = UpdateParams {
            enabled: config.enabled as u32,
            skip_nonfinite: config.skips_nonfinite() as u32,
            growth_interval: config.growth_interval,
            _pad: 0,
            growth_factor: config.growth_factor,
            backoff_factor: config.backoff_factor,
            min_scale: config.min_scale.unwrap_or(0.0),
            max_scale: config.max_scale.unwrap_or(f32::MAX),
        };
        let update = loss_scale::update(gpu, &state, &flag, &params)?;
        Ok(LossScaler {
            gpu: gpu.clone(),
            config,
            state,
            flag,
            update,
        })
    }

    pub fn config(&self) -> &ScalerConfig {
        &self.config
    }

    pub fn is_enabled(&self) -> bool {
        self.config.enabled
    }

    /// CONTRACT: a storage buffer whose first 4 bytes are the current loss scale as f32
    /// (bind it as `array<f32>`, read element 0). 1.0 for a disabled scaler. The rest of
    /// the buffer is the scaler's other state; do not write it.
    pub fn scale_buffer(&self) -> &wgpu::Buffer {
        &self.state
    }

    /// The found-inf flag this scaler reads (bind it to kernels' `found_inf` slots).
    pub fn flag(&self) -> &OverflowFlag {
        &self.flag
    }

    /// Clears the found-inf flag. Encode it at the start of every step, before the
    /// forward pass and outside any compute pass (it is a buffer clear).
    pub fn clear_flag(&self, encoder: &mut wgpu::CommandEncoder) {
        self.flag.clear(encoder);
    }

    /// Encodes the scale update (backoff or growth, counters). It must come after every
    /// kernel that raises the flag and after the optimizer consumed the step's scale;
    /// [`crate::optim::AdamW::encode_step`] encodes it last. No allocation, no readback.
    pub fn encode_update(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.update.encode(pass);
    }

    pub(crate) async fn read_words(&self) -> Result<Words> {
        let bytes = self
            .gpu
            .read_buffer(&self.state, (word::USED * 4) as u64)
            .await?;
        let mut w = [0u32; word::USED];
        for (i, c) in bytes.chunks_exact(4).enumerate() {
            w[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(Words(w))
    }

    /// Reads the statistics (one readback; call it between steps, not inside one).
    pub async fn stats(&self) -> Result<OptimStats> {
        Ok(self.read_words().await?.stats())
    }

    /// Blocking [`LossScaler::stats`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn stats_blocking(&self) -> Result<OptimStats> {
        pollster::block_on(self.stats())
    }

    pub(crate) fn scaler_tensors(words: &Words) -> Vec<StateTensor> {
        let w = &words.0;
        vec![
            StateTensor::f32("scaler.scale", &[1], vec![f32::from_bits(w[word::SCALE])]),
            StateTensor::u32("scaler.growth_tracker", &[1], vec![w[word::GROWTH_TRACKER]]),
            StateTensor::u32("scaler.skipped_steps", &[1], vec![w[word::SKIPPED]]),
            StateTensor::u32("scaler.nonfinite_steps", &[1], vec![w[word::NONFINITE]]),
            StateTensor::u32(
                "scaler.last_step_skipped",
                &[1],
                vec![w[word::LAST_SKIPPED]],
            ),
        ]
    }

    /// The scaler's state as named tensors: `scaler.scale` (f32 `[1]`),
    /// `scaler.growth_tracker`, `scaler.skipped_steps`, `scaler.nonfinite_steps`,
    /// `scaler.last_step_skipped` (u32 `[1]` each). One readback. [`crate::optim::AdamW::state`]
    /// includes these.
    pub async fn state(&self) -> Result<Vec<StateTensor>> {
        Ok(Self::scaler_tensors(&self.read_words().await?))
    }

    /// Blocking [`LossScaler::state`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn state_blocking(&self) -> Result<Vec<StateTensor>> {
        pollster::block_on(self.state())
    }

    /// Checks and decodes the scaler's tensors (nothing is written).
    pub(crate) fn parse_state(&self, tensors: &[StateTensor]) -> Result<[u32; 5]> {
        let scale = find_f32_scalar(tensors, "scaler.scale")?;
        let tracker = find_u32_scalar(tensors, "scaler.growth_tracker")?;
        let skipped = find_u32_scalar(tensors, "scaler.skipped_steps")?;
        let nonfinite = find_u32_scalar(tensors, "scaler.nonfinite_steps")?;
        let last = find_u32_scalar(tensors, "scaler.last_step_skipped")?;
        if self.config.enabled && !(scale.is_finite() && scale >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "scaler.scale = {scale} is not a usable loss scale"
            )));
        }
        // A disabled scaler's scale is 1.0 and its tracker 0, whatever was saved.
        let (scale, tracker) = if self.config.enabled {
            (scale, tracker)
        } else {
            (1.0, 0)
        };
        Ok([scale.to_bits(), tracker, skipped, nonfinite, last])
    }

    pub(crate) fn write_scaler_words(&self, w: &[u32; 5]) -> Result<()> {
        self.gpu.check()?;
        // Words SCALE..=LAST_SKIPPED are contiguous from 0.
        self.gpu
            .queue()
            .write_buffer(&self.state, 0, bytemuck::cast_slice(w));
        Ok(())
    }

    /// Restores [`LossScaler::state`]'s tensors (queued; ordered before the next
    /// submission). Every tensor is checked before anything is written: a missing name
    /// is [`Error::MissingTensor`], a wrong shape or kind [`Error::ShapeMismatch`].
    /// A disabled scaler keeps scale 1.0 and tracker 0 and restores only the counters.
    pub fn load_state(&self, tensors: &[StateTensor]) -> Result<()> {
        let w = self.parse_state(tensors)?;
        self.write_scaler_words(&w)
    }

    pub(crate) fn state_buffer(&self) -> &wgpu::Buffer {
        &self.state
    }
}
