// 16-byte storage prelude: F16 as `array<vec4<u32>>`, eight halves a word (element 2p in
// the low half of u32 p), on both f16 paths: WGSL has no 16-byte f16 load (`vec4<f16>`
// is 8 bytes and naga's bitcast cannot turn a vec2<u32> into a vec4<f16>), so halves
// widen through `unpack2x16float`, exact for every bit pattern (tests/casts.rs checks
// all 65,536 on both paths), and narrow through `f32_to_f16_bits` as in the packed
// prelude.
@group(0) @binding($B) var<storage, $A> $N: array<vec4<u32>>;

fn load2_$N(p: u32) -> vec2<f32> {
    return unpack2x16float($N[p >> 2u][p & 3u]);
}

fn load_$N(i: u32) -> f32 {
    return load2_$N(i >> 1u)[i & 1u];
}

fn load8_$N(o: u32) -> Vec8 {
    let word4 = $N[o];
    return Vec8(vec4<f32>(unpack2x16float(word4.x), unpack2x16float(word4.y)),
                vec4<f32>(unpack2x16float(word4.z), unpack2x16float(word4.w)));
}
//! write
fn store2_$N(p: u32, v: vec2<f32>) {
    let lo = f32_to_f16_bits(v.x);
    let hi = f32_to_f16_bits(v.y);
    if (f16_bits_nonfinite(lo) || f16_bits_nonfinite(hi)) {
        note_overflow();
    }
    $N[p >> 2u][p & 3u] = lo | (hi << 16u);
}

// Read-modify-write of the element's word: not atomic (see dtype/f16_packed.wgsl).
fn store_$N(i: u32, v: f32) {
    let bits = f32_to_f16_bits(v);
    if (f16_bits_nonfinite(bits)) {
        note_overflow();
    }
    let p = i >> 1u;
    let shift = (i & 1u) * 16u;
    let word = $N[p >> 2u][p & 3u];
    $N[p >> 2u][p & 3u] = (word & ~(0xFFFFu << shift)) | (bits << shift);
}

// Four f32 -> four f16 bit patterns, each in the low half of its lane.
fn f16_bits4_$N(v: vec4<f32>) -> vec4<u32> {
    return vec4<u32>(f32_to_f16_bits(v.x), f32_to_f16_bits(v.y), f32_to_f16_bits(v.z),
                     f32_to_f16_bits(v.w));
}

fn store8_$N(o: u32, v: Vec8) {
    let first4 = f16_bits4_$N(v.a);
    let second4 = f16_bits4_$N(v.b);
    let exp_mask = vec4<u32>(0x7C00u);
    if (any((first4 & exp_mask) == exp_mask) || any((second4 & exp_mask) == exp_mask)) {
        note_overflow();
    }
    $N[o] = vec4<u32>(first4.x | (first4.y << 16u), first4.z | (first4.w << 16u),
                      second4.x | (second4.y << 16u), second4.z | (second4.w << 16u));
}
