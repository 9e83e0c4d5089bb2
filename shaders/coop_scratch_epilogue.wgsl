// The scratch epilogue of the whole-tile cooperative-matrix kernels (`//!use
// coop_scratch_epilogue` in a kernel section): any C dtype, bias, accumulate. Each kernel
// defines CWG, SG_MIN, EPI_SYNC and `c_at` (C's element index of a row and column);
// `store_pair` comes from coop_tiles.

// One 16 x 16 fragment per subgroup the driver may run (subgroup_id < CWG / SG_MIN).
var<workgroup> scratch: array<f32, (CWG / SG_MIN) * 256u>;

fn init_acc(m: u32, n: u32) -> coop_mat16x16<f32, C> {
    return coop_mat16x16<f32, C>();
}

// Scratch barrier. A subgroup reads only its own scratch slot, so subgroup barriers
// (EPI_SYNC 1) suffice; workgroup barriers (EPI_SYNC 0) are the conservative choice
// (every subgroup emits the same fragments, so they are reached uniformly).
fn scratch_sync() {
    if (EPI_SYNC != 0u) {
        subgroupBarrier();
    } else {
        workgroupBarrier();
    }
}

// Writes the 16 x 16 fragment at C (m, n) through subgroup `slot`'s scratch.
fn emit(acc: coop_mat16x16<f32, C>, m: u32, n: u32, slot: u32, lane: u32, lanes: u32) {
    let at = slot * 256u;
    let ld = 16u;
    coopStoreT(acc, &scratch[at], ld);
    scratch_sync();
    for (var w = lane; w < 128u; w += lanes) {
        let r = w / 8u;
        let col = 2u * (w % 8u);
        let x = scratch[at + r * 16u + col];
        let y = scratch[at + r * 16u + col + 1u];
        store_pair(c_at(m + r, n + col), x, y, n + col);
    }
    scratch_sync();
}

