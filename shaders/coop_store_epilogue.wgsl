// The f32 epilogue of the whole-tile cooperative-matrix kernels (`//!use
// coop_store_epilogue` in a kernel section): C is f32 without bias, each fragment one
// coopStore straight into C; when accumulating, the accumulators start from the old C
// (one coopLoad each). Each kernel defines `c_at` (C's element index of a row and
// column) and `c_ld` (elements between C's rows).

fn init_acc(m: u32, n: u32) -> coop_mat16x16<f32, C> {
    if ((params.flags & FLAG_ACCUMULATE) != 0u) {
        let at = c_at(m, n);
        let ld = c_ld();
        return coopLoadT<coop_mat16x16<f32, C>>(&c[at], ld);
    }
    return coop_mat16x16<f32, C>();
}

fn emit(acc: coop_mat16x16<f32, C>, m: u32, n: u32, slot: u32, lane: u32, lanes: u32) {
    let at = c_at(m, n);
    let ld = c_ld();
    coopStoreT(acc, &c[at], ld);
}
