// In-place addition y += x, the graph's gradient fallback: a backward kernel that can only
// overwrite writes a scratch gradient, and this adds it into the value's gradient buffer
// (see src/nn/graph.rs). Arithmetic in f32 whatever the storage dtypes; each invocation
// adds one octet (eight elements) in 16-byte accesses, the last partial octet pair by
// pair so 16-bit outputs are written a whole u32 word at a time.
//!words16

struct Params {
    n: u32, // number of elements
}

override WG: u32 = 256;

//!kernel add_into
// x: (n) any dtype, the term to add (a scratch gradient)
// y: (n) any dtype, y + x (overwritten; an accumulated gradient)
// found_inf: (1) atomic flag raised by 16-bit stores of inf / NaN
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let o = flat_index(wg_id, num_wg, li, WG);
    let whole = params.n / 8u;
    if (o < whole) {
        let yv = load8_y(o);
        let xv = load8_x(o);
        store8_y(o, Vec8(yv.a + xv.a, yv.b + xv.b));
        return;
    }
    if (o != whole) {
        return;
    }
    for (var p = 4u * o; 2u * p < params.n; p += 1u) {
        var s = load2_y(p) + load2_x(p);
        // The padding element past n is not data: keep it 0 so it cannot raise the flag.
        if (2u * p + 1u >= params.n) {
            s.y = 0.0;
        }
        store2_y(p, s);
    }
}
