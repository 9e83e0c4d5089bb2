// Elementwise activations, forward and backward: GELU (tanh approximation, as GPT-2) and
// ReLU. Arithmetic in f32 whatever the storage dtypes; each invocation handles one octet
// (eight elements) in 16-byte accesses, and the last, partial octet pair by pair so 16-bit
// outputs are still written a whole u32 word at a time. The math takes vec4s (a pair
// rides in .xy): the same operations on every element as the former vec2 code.
//!words16

struct Params {
    n: u32, // number of elements (B * C)
}

override WG: u32 = 256;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;

// tanh without overflow: exp(-2|u|) lies in (0, 1], so neither branch can produce inf/inf
// (a builtin tanh built from exp(2u) may return NaN past |u| ~ 44 on some backends).
fn stable_tanh(u: vec4<f32>) -> vec4<f32> {
    let t = exp(-2.0 * abs(u));
    return sign(u) * (1.0 - t) / (1.0 + t);
}

// gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
fn gelu(x: vec4<f32>) -> vec4<f32> {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    return 0.5 * x * (1.0 + stable_tanh(u));
}

// d gelu / dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
fn gelu_grad(x: vec4<f32>) -> vec4<f32> {
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

// Element-wise results of the four kernels on four elements.
fn gelu_dx(x: vec4<f32>, dy: vec4<f32>) -> vec4<f32> {
    return dy * gelu_grad(x);
}

fn relu(x: vec4<f32>) -> vec4<f32> {
    return max(x, vec4<f32>(0.0));
}

fn relu_dx(x: vec4<f32>, dy: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(0.0), dy, x > vec4<f32>(0.0));
}

// A pair in a vec4's .xy (the tail path).
fn wide(v: vec2<f32>) -> vec4<f32> {
    return vec4<f32>(v, 0.0, 0.0);
}

//!kernel gelu_forward
// x: (B, C) any dtype, the layer input (saved for backward)
// y: (B, C) any dtype, gelu(x)
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let o = flat_index(wg_id, num_wg, li, WG);
    let whole = params.n / 8u;
    if (o < whole) {
        let xv = load8_x(o);
        store8_y(o, Vec8(gelu(xv.a), gelu(xv.b)));
        return;
    }
    if (o != whole) {
        return;
    }
    for (var p = 4u * o; 2u * p < params.n; p += 1u) {
        store2_y(p, gelu(wide(masked(load2_x(p), p))).xy);
    }
}

//!kernel gelu_backward
// x: (B, C) any dtype, the forward input
// dy: (B, C) any dtype, gradient of the loss w.r.t. y
// dx: (B, C) any dtype, gradient w.r.t. x (overwritten)
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let o = flat_index(wg_id, num_wg, li, WG);
    let whole = params.n / 8u;
    if (o < whole) {
        let xv = load8_x(o);
        let dyv = load8_dy(o);
        store8_dx(o, Vec8(gelu_dx(xv.a, dyv.a), gelu_dx(xv.b, dyv.b)));
        return;
    }
    if (o != whole) {
        return;
    }
    for (var p = 4u * o; 2u * p < params.n; p += 1u) {
        let xv = masked(load2_x(p), p);
        let dyv = masked(load2_dy(p), p);
        store2_dx(p, gelu_dx(wide(xv), wide(dyv)).xy);
    }
}

//!kernel relu_forward
// x: (B, C) any dtype, the layer input (saved for backward)
// y: (B, C) any dtype, max(x, 0)
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let o = flat_index(wg_id, num_wg, li, WG);
    let whole = params.n / 8u;
    if (o < whole) {
        let xv = load8_x(o);
        store8_y(o, Vec8(relu(xv.a), relu(xv.b)));
        return;
    }
    if (o != whole) {
        return;
    }
    for (var p = 4u * o; 2u * p < params.n; p += 1u) {
        store2_y(p, relu(wide(masked(load2_x(p), p))).xy);
    }
}

//!kernel relu_backward
// x: (B, C) any dtype, the forward input
// dy: (B, C) any dtype, gradient of the loss w.r.t. y
// dx: (B, C) any dtype, dy where x > 0, else 0 (overwritten)
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let o = flat_index(wg_id, num_wg, li, WG);
    let whole = params.n / 8u;
    if (o < whole) {
        let xv = load8_x(o);
        let dyv = load8_dy(o);
        store8_dx(o, Vec8(relu_dx(xv.a, dyv.a), relu_dx(xv.b, dyv.b)));
        return;
    }
    if (o != whole) {
        return;
    }
    for (var p = 4u * o; 2u * p < params.n; p += 1u) {
        let xv = masked(load2_x(p), p);
        let dyv = masked(load2_dy(p), p);
        store2_dx(p, relu_dx(wide(xv), wide(dyv)).xy);
    }
}
