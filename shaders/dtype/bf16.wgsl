// Storage prelude: BF16, emulated (WebGPU has no bf16 type): u32 words holding two
// bfloat16 values, element 2p in the low half. Widening is a shift; narrowing rounds to
// nearest even through `f32_to_bf16_bits`. Outputs are written in pairs (`store2_$N`).
@group(0) @binding($B) var<storage, $A> $N: array<u32>;

fn load_$N(i: u32) -> f32 {
    return bf16_bits_to_f32(($N[i >> 1u] >> ((i & 1u) * 16u)) & 0xFFFFu);
}

fn load2_$N(p: u32) -> vec2<f32> {
    let w = $N[p];
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xFFFF0000u));
}

fn load4_$N(q: u32) -> vec4<f32> {
    return vec4<f32>(load2_$N(2u * q), load2_$N(2u * q + 1u));
}
//! write
fn store2_$N(p: u32, v: vec2<f32>) {
    let lo = f32_to_bf16_bits(v.x);
    let hi = f32_to_bf16_bits(v.y);
    if (bf16_bits_nonfinite(lo) || bf16_bits_nonfinite(hi)) {
        note_overflow();
    }
    $N[p] = lo | (hi << 16u);
}

// One element, as a read-modify-write of its word: not atomic, so only for a word whose
// other half no other invocation writes in the same dispatch (matmul's strided outputs
// never call it for 16-bit C; it exists so one kernel body serves every dtype).
fn store_$N(i: u32, v: f32) {
    let bits = f32_to_bf16_bits(v);
    if (bf16_bits_nonfinite(bits)) {
        note_overflow();
    }
    let shift = (i & 1u) * 16u;
    let word = $N[i >> 1u];
    $N[i >> 1u] = (word & ~(0xFFFFu << shift)) | (bits << shift);
}
