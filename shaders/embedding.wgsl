// Token + learned position embedding, forward and backward. Everything is f32: the
// tables are the f32 master weights and the residual stream they start is f32.
//
// Backward is deterministic and uses no float atomics, so a resumed run reproduces the
// same bits: every output element is summed by one invocation in a fixed order.
//   dwte: one workgroup per (vocabulary row, block of 64 channels) walks the positions
//         that used that token, ascending (the host's counting-sort index), so a token
//         used k times costs k reads per channel; rows nobody used just write 0.
//   dwpe: one invocation per (position row, channel) sums the batch rows, ascending.

struct Params {
    rows: u32,       // N = B * T token positions
    block: u32,      // T: position p uses wpe row p % T
    channels: u32,   // C
    vocab: u32,      // V
    table_rows: u32, // rows of the table written (backward_positions: T_max)
    accumulate: u32, // backward: 1 adds into the gradient, 0 overwrites it
}

override WG: u32 = 256;
const CHANNEL_BLOCK: u32 = 64u; // channels per workgroup of backward_tokens
const F32_QUIET_NAN: u32 = 0x7FC00000u;

//!kernel forward
//!words16
// tokens: (N) u32, each < V (checked on the host; a bad one gives a NaN row)
// wte: (V, C) f32
// wpe: (T_max, C) f32, T_max >= T
// x: (N, C) f32, written: wte[tokens[p]] + wpe[p % T]
// When C is a multiple of 8 each invocation writes one octet of x (it lies in one row)
// in 16-byte accesses; otherwise one element, as before.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let g = flat_index(wg_id, num_wg, li, WG);
    let octets = params.channels % 8u == 0u;
    let i = select(g, 8u * g, octets); // first element written
    if (i >= params.rows * params.channels) {
        return;
    }
    let p = i / params.channels;
    let c = i % params.channels;
    let token = tokens[p];
    if (token >= params.vocab) {
        // Through a `let`: a NaN-valued constant expression is a shader-creation error.
        let nan_bits = F32_QUIET_NAN;
        let nan = bitcast<f32>(nan_bits);
        if (octets) {
            store8_x(g, Vec8(vec4<f32>(nan), vec4<f32>(nan)));
        } else {
            store_x(i, nan);
        }
        return;
    }
    let t = p % params.block;
    let e = token * params.channels + c;
    let q = t * params.channels + c;
    if (octets) {
        let ev = load8_wte(e / 8u);
        let qv = load8_wpe(q / 8u);
        store8_x(g, Vec8(ev.a + qv.a, ev.b + qv.b));
    } else {
        store_x(i, load_wte(e) + load_wpe(q));
    }
}

//!kernel backward_tokens
// offsets: (V + 1) u32: the positions that used token v are
//          positions[offsets[v] .. offsets[v + 1]]
// positions: (N) u32, ascending within each token's range
// dx: (N, C) f32, the gradient of x
// dwte: (V, C) f32, written (or accumulated): sum over those positions of dx[p]
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let group = wg_id.y * num_wg.x + wg_id.x;
    let blocks = (params.channels + CHANNEL_BLOCK - 1u) / CHANNEL_BLOCK;
    let v = group / blocks;
    let c = (group % blocks) * CHANNEL_BLOCK + li;
    if (v >= params.vocab || c >= params.channels) {
        return;
    }
    // Adjacent invocations read adjacent channels of one dx row: coalesced.
    let end = min(offsets[v + 1u], params.rows);
    var s = 0.0;
    for (var k = offsets[v]; k < end; k++) {
        s += load_dx(positions[k] * params.channels + c);
    }
    let i = v * params.channels + c;
    if (params.accumulate != 0u) {
        s += load_dwte(i);
    }
    store_dwte(i, s);
}

//!kernel backward_positions
// dx: (N, C) f32, N = B * T
// dwpe: (T_max, C) f32, written (or accumulated): row t < T gets sum over b ascending of
//       dx[b * T + t]; rows t >= T (unused by this block size) get 0
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg_id: vec3<u32>, @builtin(num_workgroups) num_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wg_id, num_wg, li, WG);
    if (i >= params.table_rows * params.channels) {
        return;
    }
    let t = i / params.channels;
    let c = i % params.channels;
    var s = 0.0;
    if (t < params.block) {
        for (var p = t; p < params.rows; p += params.block) {
            s += load_dx(p * params.channels + c);
        }
    }
    if (params.accumulate != 0u) {
        s += load_dwpe(i);
    }
    store_dwpe(i, s);
}
