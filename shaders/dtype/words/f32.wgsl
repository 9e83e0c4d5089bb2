// 16-byte storage prelude: F32 as `array<vec4<f32>>` (tensor buffers are padded to 16
// bytes, so the last word exists even when n is not a multiple of 4).
@group(0) @binding($B) var<storage, $A> $N: array<vec4<f32>>;

fn load_$N(i: u32) -> f32 {
    return $N[i >> 2u][i & 3u];
}

fn load2_$N(p: u32) -> vec2<f32> {
    let word4 = $N[p >> 1u];
    return select(word4.xy, word4.zw, (p & 1u) == 1u);
}

fn load8_$N(o: u32) -> Vec8 {
    return Vec8($N[2u * o], $N[2u * o + 1u]);
}
//! write
fn store_$N(i: u32, v: f32) {
    $N[i >> 2u][i & 3u] = v;
}

fn store2_$N(p: u32, v: vec2<f32>) {
    $N[p >> 1u][2u * (p & 1u)] = v.x;
    $N[p >> 1u][2u * (p & 1u) + 1u] = v.y;
}

fn store8_$N(o: u32, v: Vec8) {
    $N[2u * o] = v.a;
    $N[2u * o + 1u] = v.b;
}
