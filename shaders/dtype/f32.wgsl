// Storage prelude: F32, 4 bytes an element. `$N` is the slot name, `$B` its binding.
@group(0) @binding($B) var<storage, $A> $N: array<f32>;

fn load_$N(i: u32) -> f32 {
    return $N[i];
}

// Elements 2p and 2p + 1.
fn load2_$N(p: u32) -> vec2<f32> {
    return vec2<f32>($N[2u * p], $N[2u * p + 1u]);
}

// Elements 4q .. 4q + 3.
fn load4_$N(q: u32) -> vec4<f32> {
    return vec4<f32>($N[4u * q], $N[4u * q + 1u], $N[4u * q + 2u], $N[4u * q + 3u]);
}
//! write
fn store_$N(i: u32, v: f32) {
    $N[i] = v;
}

fn store2_$N(p: u32, v: vec2<f32>) {
    $N[2u * p] = v.x;
    $N[2u * p + 1u] = v.y;
}
