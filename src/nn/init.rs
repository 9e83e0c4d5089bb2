//! Seeded parameter initialisation, drawn from the crate's SplitMix64 stream
//! ([`crate::rng::SplitMix64`]), so library code needs no `rand` dependency and the same
//! seed gives the same parameters on every platform.

pub use crate::rng::SplitMix64;

/// Uniform in [0, 1) with 53 random bits.
pub fn unit_f64(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `n` values uniform in [-bound, bound), computed in f64 and rounded once to f32.
pub fn uniform_vec(rng: &mut SplitMix64, n: usize, bound: f32) -> Vec<f32> {
    let b = bound as f64;
    (0..n)
        .map(|_| (-b + 2.0 * b * unit_f64(rng)) as f32)
        .collect()
}

/// PyTorch `nn.Linear`'s default bound for weight and bias: `kaiming_uniform_(a=sqrt(5))`
/// on the weight gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias uses the same.
pub fn linear_bound(fan_in: usize) -> f32 {
    1.0 / (fan_in.max(1) as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_stays_in_range_and_is_centred() {
        let mut r = SplitMix64::new(3);
        let v = uniform_vec(&mut r, 10_000, 0.25);
        assert!(v.iter().all(|&x| (-0.25..=0.25).contains(&x)));
        let mean: f32 = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.01);
        assert_eq!(linear_bound(4), 0.5);
    }
}

/// `n` values from N(0, std^2) by the Box-Muller transform, computed in f64 and rounded
/// once to f32. Each pair of uniforms gives two values (cos, then sin); an odd `n` drops
/// the last sin. `ln` and `cos` come from the platform's libm: a platform whose f64
/// results differ in the last bit may, very rarely, round one f32 differently.
pub fn normal_vec(rng: &mut SplitMix64, n: usize, std: f32) -> Vec<f32> {
    let s = std as f64;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        // 1 - u lies in (0, 1]: the logarithm stays finite.
        let u1 = 1.0 - unit_f64(rng);
        let u2 = unit_f64(rng);
        let r = (-2.0 * u1.ln()).sqrt() * s;
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        out.push((r * cos) as f32);
        if out.len() < n {
            out.push((r * sin) as f32);
        }
    }
    out
}

#[cfg(test)]
mod normal_tests {
    use super::*;

    #[test]
    fn normal_has_the_asked_moments_and_is_seeded() {
        let v = normal_vec(&mut SplitMix64::new(7), 20_001, 0.02);
        assert_eq!(v.len(), 20_001);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.0005, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 0.0005, "std {}", var.sqrt());
        assert!(v.iter().all(|x| x.is_finite()));
        assert_eq!(v, normal_vec(&mut SplitMix64::new(7), 20_001, 0.02));
        assert_ne!(v, normal_vec(&mut SplitMix64::new(8), 20_001, 0.02));
    }
}
