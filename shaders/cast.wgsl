// Cast between storage dtypes: y = dtype_y(x), element for element.
// Each invocation converts one octet (eight elements) in 16-byte accesses; the last,
// partial octet goes pair by pair so 16-bit outputs are still written a whole u32 word
// at a time.
//!words16

struct Params {
    n: u32, // number of elements
}

override WG: u32 = 256;

//!kernel cast
// x: (n) any dtype
// y: (n) any dtype
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let o = flat_index(wg_id, num_wg, li, WG);
    let whole = params.n / 8u;
    if (o < whole) {
        store8_y(o, load8_x(o));
        return;
    }
    if (o != whole) {
        return;
    }
    // The tail: pairs 4o .. while 2p < n.
    for (var p = 4u * o; 2u * p < params.n; p += 1u) {
        var v = load2_x(p);
        if (2u * p + 1u >= params.n) {
            v.y = 0.0; // x's padding is not data; keep it from raising the overflow flag
        }
        store2_y(p, v);
    }
}

//!kernel copy_words
// x: (n16) 16-byte words, y: (n16) 16-byte words: y = x. The copy ceiling of a kernel
// that moves whole 16-byte words, WORDS of them an invocation (strided by the grid so
// adjacent invocations stay on adjacent words): `halfgrad bench copy` compares it with
// the dtype kernels.
override WORDS: u32 = 1u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = flat_index(wg_id, num_wg, li, WG);
    let stride = num_wg.x * num_wg.y * WG;
    for (var w = 0u; w < WORDS; w += 1u) {
        let i = p + w * stride;
        if (i < params.n) {
            y[i] = x[i];
        }
    }
}
