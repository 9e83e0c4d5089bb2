//! GPU self-check of the casts: every f16 and bf16 bit pattern round-trips through f32 on
//! the GPU, and f32 -> f16 / bf16 on the GPU equals the `half` crate bit for bit on edge
//! cases and random values. Used by `halfgrad info --check`, `cargo xtask run` and tests.

use crate::ops::cast::cast_to;
use crate::{DType, Gpu, Result, Tensor};
use half::{bf16, f16};

/// The outcome of one comparison: how many values, how many differed, the first few.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: String,
    pub checked: usize,
    pub mismatches: usize,
    pub first_mismatches: Vec<String>,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        self.mismatches == 0
    }
}

fn compare(name: &str, got: &[u16], want: &[u16], input: impl Fn(usize) -> String) -> CheckResult {
    let mut first = Vec::new();
    let mut mismatches = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            mismatches += 1;
            if first.len() < 5 {
                first.push(format!("{}: got {g:#06x}, want {w:#06x}", input(i)));
            }
        }
    }
    if got.len() != want.len() {
        mismatches += 1;
        first.push(format!("length {} != {}", got.len(), want.len()));
    }
    CheckResult {
        name: name.into(),
        checked: want.len(),
        mismatches,
        first_mismatches: first,
    }
}

/// A 16-bit pattern after a trip to f32 and back: identical, except that a NaN need only
/// come back as a quiet NaN of either payload (hardware may quiet signalling NaNs).
fn roundtrip_ok(dtype: DType, before: u16, after: u16) -> bool {
    let (exp, quiet) = if dtype == DType::F16 {
        (0x7C00u16, 0x0200u16)
    } else {
        (0x7F80, 0x0040)
    };
    let is_nan = |b: u16| (b & exp) == exp && (b & !(exp | 0x8000)) != 0;
    if is_nan(before) {
        is_nan(after) && after & quiet != 0
    } else {
        before == after
    }
}

/// Every bit pattern of `dtype` (F16 or BF16): GPU cast to f32 and back.
pub async fn roundtrip_all_patterns(gpu: &Gpu, dtype: DType) -> Result<CheckResult> {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let x = Tensor::from_bytes(gpu, &[bits.len()], dtype, bytemuck::cast_slice(&bits))?;
    let wide = cast_to(gpu, &x, DType::F32)?;
    let back = cast_to(gpu, &wide, dtype)?;
    let wide_host = wide.read_f32().await?;
    let got = back.read_u16_bits().await?;
    let mut result = CheckResult {
        name: format!("{dtype} -> f32 -> {dtype}, all 65536 patterns"),
        checked: bits.len(),
        mismatches: 0,
        first_mismatches: vec![],
    };
    for (i, &b) in bits.iter().enumerate() {
        let exact = match dtype {
            DType::F16 => f16::from_bits(b).to_f32(),
            _ => bf16::from_bits(b).to_f32(),
        };
        let widened_ok =
            wide_host[i].to_bits() == exact.to_bits() || (exact.is_nan() && wide_host[i].is_nan());
        if !roundtrip_ok(dtype, b, got[i]) || !widened_ok {
            result.mismatches += 1;
            if result.first_mismatches.len() < 5 {
                result.first_mismatches.push(format!(
                    "{b:#06x}: widened {:#010x} (want {:#010x}), back {:#06x}",
                    wide_host[i].to_bits(),
                    exact.to_bits(),
                    got[i]
                ));
            }
        }
    }
    Ok(result)
}

/// f32 values that exercise every rounding branch of f32 -> f16 and f32 -> bf16.
pub fn edge_case_f32() -> Vec<f32> {
    let mut v: Vec<u32> = vec![
        0x0000_0000,
        0x8000_0000, // +-0
        0x7F80_0000,
        0xFF80_0000, // +-inf
        0x7FC0_0000,
        0xFFC0_0000,
        0x7F80_0001,
        0x7FBF_FFFF,
        0x7FC0_1234,
        0xFFA0_0001, // NaNs with payloads
        0x0000_0001,
        0x007F_FFFF,
        0x0080_0000, // f32 subnormals, smallest normal
        0x7F7F_FFFF,
        0xFF7F_FFFF, // largest finite f32
    ];
    let f = |x: f32| x.to_bits();
    for x in [
        65504.0f32,
        65519.99,
        65520.0,
        65536.0,
        -65520.0, // f16 largest finite, first to round to inf
        5.960_464_5e-8,
        2.980_232_2e-8,
        2.980_232_4e-8,
        8.940_697e-8, // f16 smallest subnormal, ties around it
        6.097_555e-5,
        6.103_515_6e-5, // f16 largest subnormal, smallest normal
        1.0,
        1.000_488_3,
        1.000_976_6,
        1.001_464_8, // f16 ties to even around 1 (up and down)
        3.389_531_4e38,
        3.402_823_5e38, // bf16 largest finite, rounding to inf
        1.003_906_3,
        1.011_718_8, // bf16 ties around 1
    ] {
        v.push(f(x));
        v.push(f(-x));
    }
    for e in 0..255u32 {
        // Each exponent with mantissas at the tie points of both formats.
        for m in [
            0u32, 0x1000, 0x3000, 0x0FFF, 0x1001, 0x8000, 0x1_8000, 0x7FFF, 0x8001, 0x7F_FFFF,
        ] {
            v.push((e << 23) | m);
        }
    }
    v.into_iter().map(f32::from_bits).collect()
}

/// Random f32 bit patterns (all exponents, all signs, NaNs included), xorshift-seeded.
pub fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            f32::from_bits((s >> 16) as u32)
        })
        .collect()
}

/// GPU f32 -> `dtype` on `values` against `half`'s from_f32.
pub async fn narrow_matches_half(
    gpu: &Gpu,
    values: &[f32],
    dtype: DType,
    label: &str,
) -> Result<CheckResult> {
    let x = Tensor::from_f32(gpu, &[values.len()], values, DType::F32)?;
    let y = cast_to(gpu, &x, dtype)?;
    let got = y.read_u16_bits().await?;
    let want: Vec<u16> = match dtype {
        DType::F16 => values.iter().map(|&v| f16::from_f32(v).to_bits()).collect(),
        _ => values
            .iter()
            .map(|&v| bf16::from_f32(v).to_bits())
            .collect(),
    };
    let path = if dtype == DType::F16 && gpu.f16_native() {
        " (native f16)"
    } else if dtype == DType::F16 {
        " (packed f16)"
    } else {
        ""
    };
    Ok(compare(
        &format!("f32 -> {dtype}{path}, {label}"),
        &got,
        &want,
        |i| format!("{:#010x}", values[i].to_bits()),
    ))
}

/// The full cast self-check; `random` values per narrowing test.
pub async fn run_all(gpu: &Gpu, random: usize) -> Result<Vec<CheckResult>> {
    let edges = edge_case_f32();
    let rand = random_f32(random, 0x5EED);
    Ok(vec![
        roundtrip_all_patterns(gpu, DType::F16).await?,
        roundtrip_all_patterns(gpu, DType::BF16).await?,
        narrow_matches_half(gpu, &edges, DType::F16, "edge cases").await?,
        narrow_matches_half(gpu, &edges, DType::BF16, "edge cases").await?,
        narrow_matches_half(gpu, &rand, DType::F16, "random").await?,
        narrow_matches_half(gpu, &rand, DType::BF16, "random").await?,
    ])
}

/// Blocking [`run_all`] (native only).
#[cfg(not(target_arch = "wasm32"))]
pub fn run_all_blocking(gpu: &Gpu, random: usize) -> Result<Vec<CheckResult>> {
    pollster::block_on(run_all(gpu, random))
}
