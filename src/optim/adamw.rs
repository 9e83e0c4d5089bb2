//! Fused AdamW on f32 master weights, with loss-scale unscaling, optional gradient
//! clipping by global norm and step skipping on non-finite gradients, all on the GPU.

use crate::amp::LossScaler;
use crate::checkpoint::state::{
    find_f32, find_f32_scalar, find_u32_scalar, fmt_opt_f32, parse_kv, parse_kv_opt_f32,
    StateTensor,
};
use crate::kernels::Dispatch;
use crate::layout::{hyper, scaler as word, work};
use crate::nn::Param;
use crate::ops::adam::{self, StateBuffers, UpdateTensors};
use crate::ops::loss_scale;
use crate::{DType, Error, Gpu, Result, Tensor};
use std::sync::atomic::{AtomicU32, Ordering};

/// AdamW hyperparameters. [`Default`]: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight
/// decay 0 (torch.optim.Adam's defaults; torch.optim.AdamW defaults to 1e-2), no clipping.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamConfig {
    /// Learning rate; change it between steps with [`AdamW::set_lr`].
    pub lr: f32,
    /// (beta1, beta2): decay of the first and second moments.
    pub betas: (f32, f32),
    /// Added to the bias-corrected sqrt of the second moment.
    pub eps: f32,
    /// Decoupled weight decay: `p -= lr * weight_decay * p` before the Adam update.
    pub weight_decay: f32,
    /// Clip the unscaled gradient to this global L2 norm
    /// (`torch.nn.utils.clip_grad_norm_`). `None`: no clipping.
    pub max_grad_norm: Option<f32>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: None,
        }
    }
}

fn check_lr(lr: f32) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "AdamW: learning rate {lr} must be finite and >= 0"
        )))
    }
}

impl AdamConfig {
    /// Checks PyTorch's ranges (betas in [0, 1), eps >= 0, weight decay >= 0) and a
    /// positive clipping norm.
    pub fn validate(&self) -> Result<()> {
        check_lr(self.lr)?;
        let bad = |m: String| Err(Error::InvalidArgument(format!("AdamW: {m}")));
        for (i, b) in [self.betas.0, self.betas.1].into_iter().enumerate() {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("beta{} = {b} must be in [0, 1)", i + 1));
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad(format!("eps {} must be finite and >= 0", self.eps));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay {} must be finite and >= 0",
                self.weight_decay
            ));
        }
        if let Some(m) = self.max_grad_norm {
            if !(m.is_finite() && m > 0.0) {
                return bad(format!("max_grad_norm {m} must be finite and > 0"));
            }
        }
        Ok(())
    }

    /// The configuration as string key/values (`optim.lr`, `optim.beta1`, ...) for
    /// checkpoint metadata; floats parse back exactly.
    pub fn to_kv(&self) -> Vec<(String, String)> {
        vec![
            ("optim.name".into(), "adamw".into()),
            ("optim.lr".into(), format!("{:?}", self.lr)),
            ("optim.beta1".into(), format!("{:?}", self.betas.0)),
            ("optim.beta2".into(), format!("{:?}", self.betas.1)),
            ("optim.eps".into(), format!("{:?}", self.eps)),
            (
                "optim.weight_decay".into(),
                format!("{:?}", self.weight_decay),
            ),
            (
                "optim.max_grad_norm".into(),
                fmt_opt_f32(self.max_grad_norm),
            ),
        ]
    }

    /// Reads [`AdamConfig::to_kv`]'s keys over `self` (absent keys keep their value,
    /// other keys are ignored) and validates the result.
    pub fn with_kv(mut self, kv: &[(String, String)]) -> Result<Self> {
        if let Some(v) = parse_kv(kv, "optim.lr")? {
            self.lr = v;
        }
        if let Some(v) = parse_kv(kv, "optim.beta1")? {
            self.betas.0 = v;
        }
        if let Some(v) = parse_kv(kv, "optim.beta2")? {
            self.betas.1 = v;
        }
        if let Some(v) = parse_kv(kv, "optim.eps")? {
            self.eps = v;
        }
        if let Some(v) = parse_kv(kv, "optim.weight_decay")? {
            self.weight_decay = v;
        }
        if let Some(v) = parse_kv_opt_f32(kv, "optim.max_grad_norm")? {
            self.max_grad_norm = v;
        }
        self.validate()?;
        Ok(self)
    }
}

/// Optimizer state of one parameter.
struct ParamState {
    name: String,
    shape: Vec<usize>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// Fused AdamW over a fixed set of parameters, stepping entirely on the GPU.
///
/// Every kernel launch of a step is built once in [`AdamW::new`]; [`AdamW::encode_step`]
/// only records them, so a step allocates nothing and reads nothing back.
///
/// # What one step does (all on the GPU, in one compute pass)
///
/// 1. **check**, per parameter: raise found-inf if the f32 gradient holds an inf or NaN
///    (bit test); write partial sums of `(grad / scale)^2`.
/// 2. **finalize**, one workgroup: global norm of the unscaled gradient; the skip
///    decision (found-inf raised, see [`crate::amp::ScalerConfig::skips_nonfinite`]);
///    if not skipped: step += 1, clip coefficient `min(max_norm / (norm + 1e-6), 1)`,
///    bias corrections `1 - beta^step`.
/// 3. **update**, per parameter: if skipped, only clear the gradient (master, moments,
///    low copy and step count stay bit-identical); otherwise
///    `g = grad / scale * clip`, `p *= 1 - lr * wd`, Adam moments, bias-corrected
///    update of the f32 master, round-to-nearest-even into the f16 / bf16 copy, clear
///    the gradient.
/// 4. **scaler update**: back off after a non-finite step, grow after
///    `growth_interval` clean ones ([`LossScaler::encode_update`]).
///
/// # The caller's step order
///
/// ```text
/// let mut enc = gpu.encoder("step");
/// adamw.clear_flag(&mut enc);        // found-inf = 0; outside any compute pass
/// {
///     let mut pass = enc.begin_compute_pass(&Default::default());
///     /* forward, backward (seeded with scale_buffer()[0]; 16-bit stores raise flag) */
///     adamw.encode_step(&mut pass);  // after the whole backward
/// }
/// gpu.submit(enc.finish())?;
/// ```
///
/// Gradients are cleared by every step, skipped or not, so backward kernels may
/// accumulate into them. Master weights, gradients, moments and the low copy must not
/// be written by anything else between the backward and the step.
pub struct AdamW {
    gpu: Gpu,
    config: AdamConfig,
    scaler: LossScaler,
    params: Vec<ParamState>,
    work: wgpu::Buffer,
    hyper: wgpu::Buffer,
    checks: Vec<Dispatch>,
    finalize: Dispatch,
    updates: Vec<Dispatch>,
    lr_bits: AtomicU32,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("config", &self.config)
            .field("lr", &self.lr())
            .field("params", &self.params.len())
            .finish()
    }
}

fn storage_buffer(gpu: &Gpu, label: &'static str, words: &[u32]) -> Result<wgpu::Buffer> {
    let size = (words.len() as u64 * 4).div_ceil(16).max(1) * 16;
    let buffer = gpu.scoped(label, || {
        gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })?;
    let mut bytes: Vec<u8> = bytemuck::cast_slice(words).to_vec();
    bytes.resize(size as usize, 0);
    gpu.queue().write_buffer(&buffer, 0, &bytes);
    Ok(buffer)
}

impl AdamW {
    /// Builds the optimizer for `params` (zero moments, step 0) and every dispatch of
    /// its step. `scaler` supplies the scale, the found-inf flag and the step counters;
    /// one scaler serves one optimizer. Parameter names must be unique (they name the
    /// state tensors); each gradient must be f32 with the master's shape.
    pub fn new(
        gpu: &Gpu,
        params: &[&Param],
        config: AdamConfig,
        scaler: &LossScaler,
    ) -> Result<AdamW> {
        config.validate()?;
        if params.is_empty() {
            return Err(Error::InvalidArgument("AdamW: empty parameter list".into()));
        }
        let mut names = std::collections::HashSet::new();
        for p in params {
            if !names.insert(p.name.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "AdamW: parameter name `{}` appears twice",
                    p.name
                )));
            }
            if p.master.dtype() != DType::F32 || p.grad.dtype() != DType::F32 {
                return Err(Error::DTypeMismatch {
                    op: "AdamW",
                    expected: format!("f32 master and gradient for `{}`", p.name),
                    got: if p.master.dtype() != DType::F32 {
                        p.master.dtype()
                    } else {
                        p.grad.dtype()
                    },
                });
            }
        }

        let h = {
            let mut h = [0f32; hyper::ALLOCATED];
            h[hyper::LR] = config.lr;
            h[hyper::BETA1] = config.betas.0;
            h[hyper::BETA2] = config.betas.1;
            h[hyper::EPS] = config.eps;
            h[hyper::WEIGHT_DECAY] = config.weight_decay;
            h[hyper::MAX_NORM] = config.max_grad_norm.unwrap_or(0.0);
            h.map(f32::to_bits)
        };
        let hyper_buf = storage_buffer(gpu, "halfgrad adamw hyper", &h)?;
        // All zero: bias corrections start at 1 - beta^0 = 0.
        let work_buf = storage_buffer(gpu, "halfgrad adamw work", &[0u32; work::ALLOCATED])?;
        let total_partials: u64 = params
            .iter()
            .map(|p| loss_scale::check_groups(p.len()) as u64)
            .sum();
        let partials = storage_buffer(
            gpu,
            "halfgrad grad-norm partials",
            &vec![0u32; total_partials as usize],
        )?;

        let state = StateBuffers {
            scaler: scaler.state_buffer(),
            work: &work_buf,
            hyper: &hyper_buf,
        };
        let mut slots = Vec::with_capacity(params.len());
        let mut checks = Vec::with_capacity(params.len());
        let mut updates = Vec::with_capacity(params.len());
        let mut base = 0u32;
        for p in params {
            let exp_avg = Tensor::zeros(gpu, p.shape(), DType::F32)?;
            let exp_avg_sq = Tensor::zeros(gpu, p.shape(), DType::F32)?;
            if p.grad.shape() != p.shape() {
                return Err(Error::shape(
                    "AdamW",
                    format!("gradient of `{}` with shape {:?}", p.name, p.shape()),
                    format!("{:?}", p.grad.shape()),
                ));
            }
            checks.push(loss_scale::check(
                gpu,
                &p.grad,
                scaler.state_buffer(),
                &partials,
                base,
                scaler.flag(),
            )?);
            base += loss_scale::check_groups(p.len());
            updates.push(adam::update(
                gpu,
                &UpdateTensors {
                    master: &p.master,
                    grad: &p.grad,
                    exp_avg: &exp_avg,
                    exp_avg_sq: &exp_avg_sq,
                    low: p.low.as_ref(),
                },
                state,
            )?);
            slots.push(ParamState {
                name: p.name.clone(),
                shape: p.shape().to_vec(),
                exp_avg,
                exp_avg_sq,
            });
        }
        let finalize = adam::finalize(
            gpu,
            &partials,
            base,
            state,
            scaler.flag(),
            scaler.config().skips_nonfinite(),
        )?;
        Ok(AdamW {
            gpu: gpu.clone(),
            lr_bits: AtomicU32::new(config.lr.to_bits()),
            config,
            scaler: scaler.clone(),
            params: slots,
            work: work_buf,
            hyper: hyper_buf,
            checks,
            finalize,
            updates,
        })
    }

    /// Clears the found-inf flag: encode it first in every step's encoder, before the
    /// forward, outside any compute pass. Same as [`LossScaler::clear_flag`].
    pub fn clear_flag(&self, encoder: &mut wgpu::CommandEncoder) {
        self.scaler.clear_flag(encoder);
    }

    /// Encodes a whole optimizer step (check, finalize, per-parameter AdamW, scale
    /// update) after the backward in the same or a later pass of the step's command
    /// buffer. No allocation, no readback, no host decision: skipping happens on the GPU.
    pub fn encode_step(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.checks {
            d.encode(pass);
        }
        self.finalize.encode(pass);
        for d in &self.updates {
            d.encode(pass);
        }
        self.scaler.encode_update(pass);
    }

    /// Records [`AdamW::encode_step`] in a command buffer of its own and submits it (for
    /// tools and tests whose backward was submitted separately). Does not clear the flag.
    pub fn submit_step(&self) -> Result<()> {
        let mut enc = self.gpu.encoder("halfgrad adamw step");
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("halfgrad adamw step"),
                timestamp_writes: None,
            });
            self.encode_step(&mut pass);
        }
        self.gpu.submit(enc.finish())?;
        Ok(())
    }

    /// Sets the learning rate used from the next submitted step on (a queued 4-byte
    /// write; schedules may call it every step). No readback.
    pub fn set_lr(&self, lr: f32) -> Result<()> {
        check_lr(lr)?;
        self.gpu.check()?;
        self.gpu
            .queue()
            .write_buffer(&self.hyper, (hyper::LR * 4) as u64, bytemuck::bytes_of(&lr));
        self.lr_bits.store(lr.to_bits(), Ordering::SeqCst);
        Ok(())
    }

    /// The learning rate last set.
    pub fn lr(&self) -> f32 {
        f32::from_bits(self.lr_bits.load(Ordering::SeqCst))
    }

    /// The configuration given to [`AdamW::new`] (its `lr` is the initial one).
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    pub fn scaler(&self) -> &LossScaler {
        &self.scaler
    }

    /// Optimizer and scaler configuration as string key/values for checkpoint metadata
    /// (`optim.*` with the current lr, then `scaler.*`). Rebuild with
    /// `AdamConfig::default().with_kv(&kv)` and `ScalerConfig::default().with_kv(&kv)`.
    pub fn config_kv(&self) -> Vec<(String, String)> {
        let mut cfg = self.config.clone();
        cfg.lr = self.lr();
        let mut kv = cfg.to_kv();
        kv.extend(self.scaler.config().to_kv());
        kv
    }

    /// Scale, skipped / non-finite step totals, growth tracker, step count and last
    /// gradient norm. One readback.
    pub async fn stats(&self) -> Result<crate::amp::OptimStats> {
        self.scaler.stats().await
    }

    /// Blocking [`AdamW::stats`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn stats_blocking(&self) -> Result<crate::amp::OptimStats> {
        self.scaler.stats_blocking()
    }

    /// Everything that determines the following steps, as named tensors:
    ///
    /// - `optim.{param}.exp_avg`, `optim.{param}.exp_avg_sq`: f32, the parameter's shape
    /// - `optim.step`: u32 `[1]`, non-skipped steps
    /// - `optim.bias_correction1`, `optim.bias_correction2`: f32 `[1]`, `1 - beta^step` as
    ///   the GPU computed them (saved so a resume is bit-exact)
    /// - `optim.lr`: f32 `[1]`, the current learning rate
    /// - `optim.last_grad_norm`: f32 `[1]` (statistics only)
    /// - the scaler's tensors ([`LossScaler::state`]): `scaler.scale`,
    ///   `scaler.growth_tracker`, `scaler.skipped_steps`, `scaler.nonfinite_steps`,
    ///   `scaler.last_step_skipped`
    ///
    /// Master weights are the model's, not the optimizer's. Reads back 2 + 2 x params
    /// buffers; call it between steps.
    pub async fn state(&self) -> Result<Vec<StateTensor>> {
        let words = self.scaler.read_words().await?;
        let work_bytes = self
            .gpu
            .read_buffer(&self.work, (work::ALLOCATED * 4) as u64)
            .await?;
        let work_word = |i: usize| {
            f32::from_le_bytes([
                work_bytes[4 * i],
                work_bytes[4 * i + 1],
                work_bytes[4 * i + 2],
                work_bytes[4 * i + 3],
            ])
        };
        let mut out = Vec::with_capacity(2 * self.params.len() + 10);
        for p in &self.params {
            out.push(StateTensor::f32(
                format!("optim.{}.exp_avg", p.name),
                &p.shape,
                p.exp_avg.read_f32().await?,
            ));
            out.push(StateTensor::f32(
                format!("optim.{}.exp_avg_sq", p.name),
                &p.shape,
                p.exp_avg_sq.read_f32().await?,
            ));
        }
        out.push(StateTensor::u32(
            "optim.step",
            &[1],
            vec![words.0[word::STEP]],
        ));
        out.push(StateTensor::f32(
            "optim.bias_correction1",
            &[1],
            vec![work_word(work::BC1)],
        ));
        out.push(StateTensor::f32(
            "optim.bias_correction2",
            &[1],
            vec![work_word(work::BC2)],
        ));
        out.push(StateTensor::f32("optim.lr", &[1], vec![self.lr()]));
        out.push(StateTensor::f32(
            "optim.last_grad_norm",
            &[1],
            vec![f32::from_bits(words.0[word::LAST_NORM])],
        ));
        out.extend(LossScaler::scaler_tensors(&words));
        Ok(out)
    }

    /// Blocking [`AdamW::state`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn state_blocking(&self) -> Result<Vec<StateTensor>> {
        pollster::block_on(self.state())
    }

    /// Restores [`AdamW::state`]'s tensors (other names are ignored, so a whole
    /// checkpoint may be passed). Every tensor is checked before anything is written:
    /// a missing name is [`Error::MissingTensor`], a wrong shape or kind (f32 / u32)
    /// [`Error::ShapeMismatch`]. Writes are queued and ordered before the next
    /// submission. Fixed hyperparameters (betas, eps, weight decay, clipping, scaler
    /// constants) are not state: rebuild them from [`AdamW::config_kv`].
    pub fn load_state(&self, tensors: &[StateTensor]) -> Result<()> {
        let mut moments = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let m = find_f32(tensors, &format!("optim.{}.exp_avg", p.name), &p.shape)?;
            let v = find_f32(tensors, &format!("optim.{}.exp_avg_sq", p.name), &p.shape)?;
            moments.push((m, v));
        }
        let step = find_u32_scalar(tensors, "optim.step")?;
        let bc1 = find_f32_scalar(tensors, "optim.bias_correction1")?;
        let bc2 = find_f32_scalar(tensors, "optim.bias_correction2")?;
        let lr = find_f32_scalar(tensors, "optim.lr")?;
        let norm = find_f32_scalar(tensors, "optim.last_grad_norm")?;
        check_lr(lr)?;
        let scaler_words = self.scaler.parse_state(tensors)?;

        for (p, (m, v)) in self.params.iter().zip(moments) {
            p.exp_avg.write_f32(m)?;
            p.exp_avg_sq.write_f32(v)?;
        }
        let queue = self.gpu.queue();
        queue.write_buffer(
            self.scaler.state_buffer(),
            (word::STEP * 4) as u64,
            bytemuck::cast_slice(&[step, norm.to_bits()]),
        );
        queue.write_buffer(
            &self.work,
            (work::BC1 * 4) as u64,
            bytemuck::cast_slice(&[bc1.to_bits(), bc2.to_bits()]),
        );
        self.scaler.write_scaler_words(&scaler_words)?;
        self.set_lr(lr)
    }

    /// The Adam moments of parameter `name` (exp_avg, exp_avg_sq), for inspection.
    pub fn moments(&self, name: &str) -> Option<(&Tensor, &Tensor)> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| (&p.exp_avg, &p.exp_avg_sq))
    }
}
