// 16-byte storage prelude: BF16 as `array<vec4<u32>>`, eight values a word (element 2p
// in the low half of u32 p). Widening is a shift; narrowing rounds to nearest even
// through `f32_to_bf16_bits`, as in dtype/bf16.wgsl.
@group(0) @binding($B) var<storage, $A> $N: array<vec4<u32>>;

fn bf16_pair_$N(w: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xFFFF0000u));
}

fn load2_$N(p: u32) -> vec2<f32> {
    return bf16_pair_$N($N[p >> 2u][p & 3u]);
}

fn load_$N(i: u32) -> f32 {
    return load2_$N(i >> 1u)[i & 1u];
}

fn load8_$N(o: u32) -> Vec8 {
    let word4 = $N[o];
    return Vec8(bitcast<vec4<f32>>(vec4<u32>(word4.x << 16u, word4.x & 0xFFFF0000u, word4.y << 16u, word4.y & 0xFFFF0000u)),
                bitcast<vec4<f32>>(vec4<u32>(word4.z << 16u, word4.z & 0xFFFF0000u, word4.w << 16u, word4.w & 0xFFFF0000u)));
}
//! write
fn store2_$N(p: u32, v: vec2<f32>) {
    let lo = f32_to_bf16_bits(v.x);
    let hi = f32_to_bf16_bits(v.y);
    if (bf16_bits_nonfinite(lo) || bf16_bits_nonfinite(hi)) {
        note_overflow();
    }
    $N[p >> 2u][p & 3u] = lo | (hi << 16u);
}

// Read-modify-write of the element's word: not atomic (see dtype/bf16.wgsl).
fn store_$N(i: u32, v: f32) {
    let bits = f32_to_bf16_bits(v);
    if (bf16_bits_nonfinite(bits)) {
        note_overflow();
    }
    let p = i >> 1u;
    let shift = (i & 1u) * 16u;
    let word = $N[p >> 2u][p & 3u];
    $N[p >> 2u][p & 3u] = (word & ~(0xFFFFu << shift)) | (bits << shift);
}

fn bf16_bits4_$N(v: vec4<f32>) -> vec4<u32> {
    return vec4<u32>(f32_to_bf16_bits(v.x), f32_to_bf16_bits(v.y), f32_to_bf16_bits(v.z),
                     f32_to_bf16_bits(v.w));
}

fn store8_$N(o: u32, v: Vec8) {
    let first4 = bf16_bits4_$N(v.a);
    let second4 = bf16_bits4_$N(v.b);
    let exp_mask = vec4<u32>(0x7F80u);
    if (any((first4 & exp_mask) == exp_mask) || any((second4 & exp_mask) == exp_mask)) {
        note_overflow();
    }
    $N[o] = vec4<u32>(first4.x | (first4.y << 16u), first4.z | (first4.w << 16u),
                      second4.x | (second4.y << 16u), second4.z | (second4.w << 16u));
}
