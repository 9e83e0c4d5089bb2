// Storage prelude: F16 on adapters without shader-f16 (many browsers, SwiftShader).
// Same bytes as the native path, read as u32 words holding two halves (element 2p in the
// low half). A thread always writes a whole word, so packed stores never race: 16-bit
// outputs are written in pairs with `store2_$N`.
@group(0) @binding($B) var<storage, $A> $N: array<u32>;

fn load_$N(i: u32) -> f32 {
    return unpack2x16float($N[i >> 1u])[i & 1u];
}

fn load2_$N(p: u32) -> vec2<f32> {
    return unpack2x16float($N[p]);
}

fn load4_$N(q: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float($N[2u * q]), unpack2x16float($N[2u * q + 1u]));
}
//! write
fn store2_$N(p: u32, v: vec2<f32>) {
    let lo = f32_to_f16_bits(v.x);
    let hi = f32_to_f16_bits(v.y);
    if (f16_bits_nonfinite(lo) || f16_bits_nonfinite(hi)) {
        note_overflow();
    }
    $N[p] = lo | (hi << 16u);
}

// One element, as a read-modify-write of its word: not atomic, so only for a word whose
// other half no other invocation writes in the same dispatch (matmul's strided outputs
// never call it for 16-bit C; it exists so one kernel body serves every dtype).
fn store_$N(i: u32, v: f32) {
    let bits = f32_to_f16_bits(v);
    if (f16_bits_nonfinite(bits)) {
        note_overflow();
    }
    let shift = (i & 1u) * 16u;
    let word = $N[i >> 1u];
    $N[i >> 1u] = (word & ~(0xFFFFu << shift)) | (bits << shift);
}
