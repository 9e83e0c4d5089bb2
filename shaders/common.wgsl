// Shared by every composed kernel: bit-exact conversions and non-finite tests.
//
// Integer operations only. WGSL leaves an out-of-range f32 -> f16 conversion (`f16(x)`,
// `pack2x16float`) indeterminate and lets a compiler assume there is no inf or NaN, so a
// scaled gradient that overflows f16 could silently become a finite value. These helpers
// round to nearest even and write the inf / NaN bit patterns themselves, matching the
// `half` crate bit for bit, so the loss scaler always sees an overflow.

// Tests bits, never isNan/isInf, which compilers may fold away.
fn f32_is_nonfinite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7F800000u) == 0x7F800000u;
}

fn f16_bits_nonfinite(h: u32) -> bool {
    return (h & 0x7C00u) == 0x7C00u;
}

fn bf16_bits_nonfinite(h: u32) -> bool {
    return (h & 0x7F80u) == 0x7F80u;
}

// f32 -> IEEE binary16 bits (low 16 bits of the result): round to nearest, ties to even;
// values past the largest finite f16 become inf; NaN stays NaN with its top payload bits
// and the quiet bit set.
fn f32_to_f16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let exp = b & 0x7F800000u;
    let man = b & 0x007FFFFFu;
    if (exp == 0x7F800000u) {
        var quiet = 0u;
        if (man != 0u) {
            quiet = 0x0200u;
        }
        return sign | 0x7C00u | quiet | (man >> 13u);
    }
    let half_exp = i32(exp >> 23u) - 112; // rebias: -127 + 15
    if (half_exp >= 31) {
        return sign | 0x7C00u;
    }
    if (half_exp <= 0) {
        // Subnormal result (or zero): shift the mantissa with its hidden bit into place.
        if (14 - half_exp > 24) {
            return sign;
        }
        let m = man | 0x00800000u;
        let shift = u32(14 - half_exp);
        let round_bit = 1u << (shift - 1u);
        var half_man = m >> shift;
        if ((m & round_bit) != 0u && (m & (3u * round_bit - 1u)) != 0u) {
            half_man += 1u;
        }
        return sign | half_man;
    }
    let h = sign | (u32(half_exp) << 10u) | (man >> 13u);
    // Round bit set and (sticky bits or odd result): round up. A carry into the exponent
    // is the correct result, up to and including inf.
    if ((man & 0x1000u) != 0u && (man & 0x2FFFu) != 0u) {
        return h + 1u;
    }
    return h;
}

// f32 -> bfloat16 bits: round to nearest even, overflow to inf, NaN kept quiet
// (identical to half::bf16::from_f32).
fn f32_to_bf16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) {
        return (b >> 16u) | 0x0040u;
    }
    let r = b >> 16u;
    if ((b & 0x8000u) != 0u && (b & 0x17FFFu) != 0u) {
        return r + 1u;
    }
    return r;
}

fn bf16_bits_to_f32(h: u32) -> f32 {
    return bitcast<f32>(h << 16u);
}

// Flattened invocation index for 1-D work dispatched as a 2-D grid of workgroups
// (a single dimension is limited to 65535 workgroups).
fn flat_index(wg_id: vec3<u32>, num_wg: vec3<u32>, local_index: u32, wg_size: u32) -> u32 {
    return (wg_id.y * num_wg.x + wg_id.x) * wg_size + local_index;
}

// 1 / x, exact when x is a power of two in the normal range (loss scales are), by
// mirroring the exponent bits; other values fall back to division (which WGSL allows to
// be 2.5 ULP off). Unscaling a gradient by a power-of-two scale is then exact.
fn reciprocal_pow2_exact(x: f32) -> f32 {
    let b = bitcast<u32>(x);
    let e = (b >> 23u) & 0xFFu;
    if ((b & 0x807FFFFFu) == 0u && e >= 1u && e <= 253u) {
        return bitcast<f32>((254u - e) << 23u);
    }
    return 1.0 / x;
}
