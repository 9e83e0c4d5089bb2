// The f32 epilogue of the whole-tile cooperative-matrix kernels (`//!use
// coop_store_epilogue` in a kernel section): C is f32 without bias, each fragment one
// coopStore straight into C; when accumulating, the accumulators start from the old C
// (one coopLoad each).

fn init_acc(m: u32, n: u32) -> coop_mat16x16<f32, C> {
    if ((params.flags & FLAG_ACCUMULATE) != 0u) {
        let at = m * params.n + n;
        let ld = params.n;
        return coopLoadT<coop_mat16x16<f32, C>>(&c[at], ld);
    }
    return coop_mat16x16<f32, C>();
}

fn emit(acc: coop_mat16x16<f32, C>, m: u32, n: u32, slot: u32, lane: u32, lanes: u32) {
    let at = m * params.n + n;
    let ld = params.n;
    coopStoreT(acc, &c[at], ld);
}
