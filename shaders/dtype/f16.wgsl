// Storage prelude: read-only F16 on adapters with shader-f16, 2 bytes an element as
// `array<f16>`; loads widen to f32 in hardware. Writable F16 slots use the packed prelude
// on every adapter: stores must round through `f32_to_f16_bits` (WGSL's f32 -> f16
// conversion is indeterminate out of range) and WGSL has no 16-bit integer to bitcast
// from, so the rounded bits are written as whole u32 words.
@group(0) @binding($B) var<storage, $A> $N: array<f16>;

fn load_$N(i: u32) -> f32 {
    return f32($N[i]);
}

fn load2_$N(p: u32) -> vec2<f32> {
    return vec2<f32>(f32($N[2u * p]), f32($N[2u * p + 1u]));
}

fn load4_$N(q: u32) -> vec4<f32> {
    let first = 4u * q; // not `b`: a slot may be named b
    return vec4<f32>(f32($N[first]), f32($N[first + 1u]), f32($N[first + 2u]), f32($N[first + 3u]));
}
