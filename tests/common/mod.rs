//! Shared test helpers: one GPU per test binary, random data, relative error, the
//! dtype-aware tolerance presets, one encode-and-submit helper and (in `reference`) the
//! f64 CPU references of the layers.
#![allow(dead_code)]

pub mod reference;

use halfgrad::{DType, Gpu, GpuOptions};
use rand::{Rng, SeedableRng};
use std::sync::OnceLock;

/// f32 everywhere: only rounding of sums differs from the f64 reference.
pub const TOL_F32: f64 = 1e-5;
/// f16 operands (11-bit significand, unit roundoff 2^-11 ~ 4.9e-4) with f32 accumulation.
pub const TOL_F16: f64 = 1e-3;
/// bf16 operands (8-bit significand, unit roundoff 2^-8 ~ 3.9e-3) with f32 accumulation.
pub const TOL_BF16: f64 = 1e-2;

pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => TOL_F32,
        DType::F16 => TOL_F16,
        DType::BF16 => TOL_BF16,
        DType::U32 => 0.0, // integers: exact
    }
}

/// The default GPU (native f16 where the adapter has it), shared by the tests of a binary.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::with_options_blocking(GpuOptions::from_env()).unwrap_or_else(|e| {
            panic!("no GPU adapter for the tests ({e}); install lavapipe: apt-get install mesa-vulkan-drivers")
        })
    })
}

/// A GPU with shader-f16 turned off: the packed-u32 f16 path, tested on every machine.
pub fn gpu_packed() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let opts = GpuOptions {
            disable_f16: true,
            ..GpuOptions::from_env()
        };
        Gpu::with_options_blocking(opts)
            .unwrap_or_else(|e| panic!("no GPU adapter for the tests ({e})"))
    })
}

/// Both f16 paths where the adapter has shader-f16, else only the packed one (says so).
pub fn gpus_for_f16() -> Vec<(&'static str, &'static Gpu)> {
    let mut v = vec![("packed", gpu_packed())];
    if gpu().caps().shader_f16 {
        v.push(("native", gpu()));
    } else {
        eprintln!(
            "skipping the native-f16 path: adapter {} has no shader-f16",
            gpu().adapter().name
        );
    }
    v
}

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// `n` values uniform in [-scale, scale].
pub fn random_vec(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..=scale)).collect()
}

/// `||out - reference|| / ||reference||` (a non-finite output gives infinity).
pub fn rel_err(out: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(
        out.len(),
        reference.len(),
        "output and reference lengths differ"
    );
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&o, &r) in out.iter().zip(reference) {
        if !o.is_finite() {
            return f64::INFINITY;
        }
        num += (o as f64 - r).powi(2);
        den += r * r;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Values as the GPU sees them after upload in `dtype` (the reference must use these).
pub fn rounded(values: &[f32], dtype: DType) -> Vec<f32> {
    values.iter().map(|&x| dtype.round(x)).collect()
}

/// Encodes one command buffer: `prologue` on the encoder (e.g. `AdamW::clear_flag`), then
/// `pass` inside one compute pass; and submits it. The submit's error is returned (a
/// lost device says so there).
pub fn submit_with(
    g: &Gpu,
    prologue: impl FnOnce(&mut wgpu::CommandEncoder),
    pass: impl FnOnce(&mut wgpu::ComputePass<'_>),
) -> halfgrad::Result<()> {
    let mut enc = g.encoder("test");
    prologue(&mut enc);
    {
        let mut p = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("test"),
            timestamp_writes: None,
        });
        pass(&mut p);
    }
    g.submit(enc.finish()).map(|_| ())
}

/// Encodes `pass` into one compute pass of one command buffer and submits it.
pub fn submit(g: &Gpu, pass: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    submit_with(g, |_| {}, pass).unwrap();
}
