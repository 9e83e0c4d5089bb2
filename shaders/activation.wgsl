// Elementwise activations, forward and backward: GELU (tanh approximation, as GPT-2) and
// ReLU. Arithmetic in f32 whatever the storage dtypes; each invocation handles one pair
// of elements so 16-bit outputs are written a whole word at a time.

struct Params {
    n: u32, // number of elements (B * C)
}

override WG: u32 = 256;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;

// tanh without overflow: exp(-2|u|) lies in (0, 1], so neither branch can produce inf/inf
// (a builtin tanh built from exp(2u) may return NaN past |u| ~ 44 on some backends).
fn stable_tanh(u: vec2<f32>) -> vec2<f32> {
    let t = exp(-2.0 * abs(u));
    return sign(u) * (1.0 - t) / (1.0 + t);
}

// gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
fn gelu(x: vec2<f32>) -> vec2<f32> {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    return 0.5 * x * (1.0 + stable_tanh(u));
}

// d gelu / dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
fn gelu_grad(x: vec2<f32>) -> vec2<f32> {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    let th = stable_tanh(u);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du;
}

// Pair p's values from slot x, with the padding element past n set to 0 (padding is not
// data and must not raise the overflow flag through a 16-bit store).
fn masked(v: vec2<f32>, p: u32) -> vec2<f32> {
    if (2u * p + 1u >= params.n) {
        return vec2<f32>(v.x, 0.0);
    }
    return v;
}

//!kernel gelu_forward
// x: (B, C) any dtype, the layer input (saved for backward)
// y: (B, C) any dtype, gelu(x)
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = flat_index(wg_id, num_wg, li, WG);
    if (2u * p >= params.n) {
        return;
    }
    store2_y(p, gelu(masked(load2_x(p), p)));
}

//!kernel gelu_backward
// x: (B, C) any dtype, the forward input
// dy: (B, C) any dtype, gradient of the loss w.r.t. y
// dx: (B, C) any dtype, gradient w.r.t. x (overwritten)
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = flat_index(wg_id, num_wg, li, WG);
    if (2u * p >= params.n) {
        return;
    }
    let xv = masked(load2_x(p), p);
    let dyv = masked(load2_dy(p), p);
    store2_dx(p, dyv * gelu_grad(xv));
}

//!kernel relu_forward
// x: (B, C) any dtype, the layer input (saved for backward)
// y: (B, C) any dtype, max(x, 0)
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = flat_index(wg_id, num_wg, li, WG);
    if (2u * p >= params.n) {
        return;
    }
    store2_y(p, max(masked(load2_x(p), p), vec2<f32>(0.0)));
}

//!kernel relu_backward
// x: (B, C) any dtype, the forward input
// dy: (B, C) any dtype, gradient of the loss w.r.t. y
// dx: (B, C) any dtype, dy where x > 0, else 0 (overwritten)
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = flat_index(wg_id, num_wg, li, WG);
    if (2u * p >= params.n) {
        return;
    }
    let xv = masked(load2_x(p), p);
    let dyv = masked(load2_dy(p), p);
    store2_dx(p, select(vec2<f32>(0.0), dyv, xv > vec2<f32>(0.0)));
}
