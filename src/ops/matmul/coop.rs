//! The cooperative-matrix kernels (16x16x16 f16 -> f32 tensor-core fragments): the
//! general `coop` kernel (every shape, batches and strided views), the `coop_tile`
//! kernel (whole tiles of one contiguous product, double-buffered 16-byte copies) and the
//! `coop_direct` kernel (whole tiles, fragments loaded straight from global memory).

use crate::{Error, Gpu, Result};

/// K per staged slice of the coop kernel.
pub(super) const COOP_BK: u32 = 32;

/// How the coop tile and direct kernels write their accumulators to C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoopEpilogue {
    /// Each fragment through a 16 x 16 f32 scratch with two workgroup barriers (the
    /// measured default).
    #[default]
    Scratch,
    /// The same scratch with subgroup barriers (a subgroup reads only its own slot).
    SubgroupScratch,
    /// coopStore straight into C where C is f32 without bias (accumulating: the
    /// accumulators start from the old C); `SubgroupScratch` for other outputs.
    Store,
}

impl CoopEpilogue {
    /// `"scratch"`, `"subgroup"` or `"store"` (benchmark tables).
    pub fn name(&self) -> &'static str {
        match self {
            CoopEpilogue::Scratch => "scratch",
            CoopEpilogue::SubgroupScratch => "subgroup",
            CoopEpilogue::Store => "store",
        }
    }

    /// The epilogue that runs: `Store` only where C is f32 without bias (`f32_store`).
    pub(super) fn resolve(self, f32_store: bool) -> CoopEpilogue {
        match self {
            CoopEpilogue::Store if !f32_store => CoopEpilogue::SubgroupScratch,
            e => e,
        }
    }

    /// Workgroup bytes of the scratch: one 16 x 16 f32 fragment per subgroup the driver
    /// may run (`threads / sg_min`), none for `Store`.
    pub(super) fn scratch_bytes(self, threads: u32, sg_min: u32) -> u32 {
        match self {
            CoopEpilogue::Store => 0,
            _ => 1024 * threads.div_ceil(sg_min.max(1)),
        }
    }
}

/// Shape of the cooperative-matrix tile kernel's workgroup tile (and of the direct
/// kernel's, where `bk` is 16, or 32 to load the next K step's fragments before the
/// current products).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoopTile {
    /// Subgroups along M and along N.
    pub subgroups: (u32, u32),
    /// 16 x 16 accumulator fragments per subgroup along M and along N (1 to 4 each).
    pub frags: (u32, u32),
    /// K per slice staged in workgroup memory (a multiple of 16).
    pub bk: u32,
}

impl CoopTile {
    /// 128 x 128 tile: 2 x 4 subgroups of 64 x 32 (8 fragments each), K slices of 16.
    /// Best measured on an H200 at 4096^3 (58 TFLOP/s; with K slices of 32: 45 in every
    /// layout; 2 x 2 subgroups of 64 x 64: 28). Small slices leave workgroup memory for
    /// more resident workgroups.
    pub const LARGE: CoopTile = CoopTile {
        subgroups: (2, 4),
        frags: (4, 2),
        bk: 16,
    };
    /// 64 x 128 tile: 2 x 4 subgroups of 32 x 32 (K slices of 32: with 16 the copies do
    /// not spread over all 256 invocations). H200: 35 to 42 TFLOP/s.
    pub const MEDIUM: CoopTile = CoopTile {
        subgroups: (2, 4),
        frags: (2, 2),
        bk: 32,
    };
    /// 64 x 64 tile: 2 x 2 subgroups of 32 x 32. H200, 4096^3: 44 TFLOP/s (24 with K
    /// slices of 32).
    pub const SMALL: CoopTile = CoopTile {
        subgroups: (2, 2),
        frags: (2, 2),
        bk: 16,
    };

    /// Rows and columns of C per workgroup.
    pub fn tile(&self) -> (u32, u32) {
        (
            16 * self.subgroups.0 * self.frags.0,
            16 * self.subgroups.1 * self.frags.1,
        )
    }

    /// Workgroup memory of the tile kernel: two padded f16 slices of each operand (the
    /// epilogue's scratch comes on top: [`CoopEpilogue::scratch_bytes`]).
    pub(super) fn slice_bytes(&self, trans_a: bool, trans_b: bool) -> u32 {
        let (bm, bn) = self.tile();
        let slice = |rows: u32, halves: u32| rows * (halves + 8) * 2;
        let a = if trans_a {
            slice(self.bk, bm)
        } else {
            slice(bm, self.bk)
        };
        let b = if trans_b {
            slice(bn, self.bk)
        } else {
            slice(self.bk, bn)
        };
        2 * (a + b)
    }

    /// Whether the fragment-copy kernel takes this shape: 1 to 8 subgroups, 1 to 4
    /// fragments each way, K slices of 16, 32 or 64 whose fragments spread evenly over
    /// the subgroups, 1 to 4 of each operand a subgroup.
    pub(super) fn valid_copied(&self) -> bool {
        let (sg_m, sg_n) = self.subgroups;
        let (fm, f_n) = self.frags;
        let subgroups = (sg_m * sg_n).max(1);
        let share =
            |frags: u32| frags.is_multiple_of(subgroups) && (1..=4).contains(&(frags / subgroups));
        let kf = self.bk / 16;
        (1..=8).contains(&sg_m)
            && (1..=8).contains(&sg_n)
            && sg_m * sg_n <= 8
            && (1..=4).contains(&fm)
            && (1..=4).contains(&f_n)
            && matches!(self.bk, 16 | 32 | 64)
            && share(sg_m * fm * kf)
            && share(sg_n * f_n * kf)
    }

    /// Workgroup memory of the fragment-copy kernel's two op-layout slices of each
    /// operand (rows padded by 8 halves) and its causal skip flag (16 bytes with any
    /// padding; the epilogue's scratch comes on top).
    pub(super) fn copied_bytes(&self) -> u32 {
        let (bm, bn) = self.tile();
        2 * 2 * (bm * (self.bk + 8) + self.bk * (bn + 8)) + 16
    }

    /// Whether the direct kernel takes this shape: 1 to 8 subgroups, 1 to 4 fragments
    /// each way, `bk` 16 (load, then multiply) or 32 (software-pipelined).
    pub(super) fn valid_direct(&self) -> bool {
        let (sg_m, sg_n) = self.subgroups;
        let (fm, f_n) = self.frags;
        (1..=8).contains(&sg_m)
            && (1..=8).contains(&sg_n)
            && sg_m * sg_n <= 8
            && (1..=4).contains(&fm)
            && (1..=4).contains(&f_n)
            && (self.bk == 16 || self.bk == 32)
    }

    /// Whether this tile shape is one the shader supports with `sg` lanes a subgroup
    /// (16-byte copies spread evenly, at most 8 an invocation per operand).
    pub(super) fn valid(&self, sg: u32) -> bool {
        let (sg_m, sg_n) = self.subgroups;
        let (fm, f_n) = self.frags;
        let (bm, bn) = self.tile();
        let threads = sg * sg_m * sg_n;
        let copies = |halves: u32| {
            let vecs = halves / 8;
            threads > 0
                && halves.is_multiple_of(8)
                && vecs.is_multiple_of(threads)
                && (1..=8).contains(&(vecs / threads))
        };
        sg_m >= 1
            && sg_n >= 1
            && (1..=4).contains(&fm)
            && (1..=4).contains(&f_n)
            && self.bk >= 16
            && self.bk.is_multiple_of(16)
            && copies(bm * self.bk)
            && copies(bn * self.bk)
    }
}

/// Workgroup memory of the coop kernel: two padded f16 slices, the f32 tile and the
/// odd-N partial sums.
fn coop_workgroup_bytes((sg_m, sg_n): (u32, u32)) -> u32 {
    let (bm, bn) = (32 * sg_m, 32 * sg_n);
    let slice = |rows: u32, cols: u32| 2 * rows * (cols + 8);
    let a = slice(bm, COOP_BK).max(slice(COOP_BK, bm));
    let b = slice(COOP_BK, bn + 8).max(slice(bn + 8, COOP_BK));
    a + b + 4 * bm * bn + 8 * bm
}

/// Ok(subgroup size the kernel is built for) where this device can run the coop kernel
/// with `subgroups` (along M, along N) a workgroup.
pub(super) fn coop_support(gpu: &Gpu, subgroups: (u32, u32)) -> Result<u32> {
    let caps = gpu.caps();
    let missing = |feature| Error::MissingFeature {
        op: "matmul (coop kernel)",
        feature,
    };
    if caps.cooperative_matrix != Some((16, 16, 16)) {
        return Err(missing(
            "EXPERIMENTAL_COOPERATIVE_MATRIX (16x16x16 f16 -> f32)",
        ));
    }
    if !caps.shader_f16 {
        return Err(missing("SHADER_F16"));
    }
    let Some((_, sg_max)) = caps.subgroups else {
        return Err(missing("SUBGROUP"));
    };
    // The tile kernels' shaders name `subgroupBarrier()` (the subgroup epilogue), which
    // naga validates against the device's features whether or not that branch runs.
    if !gpu
        .device()
        .features()
        .contains(wgpu::Features::SUBGROUP_BARRIER)
    {
        return Err(missing("SUBGROUP_BARRIER"));
    }
    let (sg_m, sg_n) = subgroups;
    if sg_m == 0 || sg_n == 0 {
        return Err(Error::InvalidArgument(
            "matmul: coop subgroups must be at least 1 x 1".into(),
        ));
    }
    if sg_max * sg_m * sg_n > caps.max_compute_invocations_per_workgroup {
        return Err(missing(
            "max_compute_invocations_per_workgroup >= subgroups x the subgroup size",
        ));
    }
    if coop_workgroup_bytes(subgroups) > caps.max_compute_workgroup_storage_size {
        return Err(missing(
            "max_compute_workgroup_storage_size for this coop tile (17 KiB for 1 x 2)",
        ));
    }
    Ok(sg_max)
}

#[cfg(test)]
mod tests {
    use super::CoopTile;

    /// Every preset spreads its copies evenly over 32-lane subgroups (the H200's size);
    /// a preset that does not is silently skipped by Auto.
    #[test]
    fn coop_tile_presets_are_valid_for_32_lanes() {
        for t in [CoopTile::LARGE, CoopTile::MEDIUM, CoopTile::SMALL] {
            assert!(t.valid(32), "{t:?}");
            let scratch = super::CoopEpilogue::Scratch.scratch_bytes(256, 32);
            assert!(t.slice_bytes(false, true) + scratch <= 48 << 10, "{t:?}");
            assert!(t.slice_bytes(true, false) + scratch <= 48 << 10, "{t:?}");
        }
    }

    /// The direct kernel takes 1 to 8 subgroups of 1 to 4 x 1 to 4 fragments, K steps
    /// of 16 or 32.
    #[test]
    fn direct_tile_shapes() {
        let t = |subgroups, frags, bk| CoopTile {
            subgroups,
            frags,
            bk,
        };
        for ok in [
            t((2, 2), (4, 4), 32),
            t((1, 1), (1, 1), 16),
            t((1, 8), (2, 2), 32),
            t((4, 2), (4, 4), 16),
        ] {
            assert!(ok.valid_direct(), "{ok:?}");
        }
        for bad in [
            t((0, 2), (4, 4), 32),
            t((4, 4), (1, 1), 16),
            t((2, 2), (5, 1), 16),
            t((2, 2), (0, 1), 16),
            t((2, 2), (2, 2), 64),
            t((2, 2), (2, 2), 8),
        ] {
            assert!(!bad.valid_direct(), "{bad:?}");
        }
    }

    /// The fragment-copy kernel spreads each slice's fragments evenly, 1 to 4 of each
    /// operand a subgroup, K slices of 16, 32 or 64.
    #[test]
    fn copied_tile_shapes() {
        let t = |subgroups, frags, bk| CoopTile {
            subgroups,
            frags,
            bk,
        };
        for ok in [
            t((2, 4), (4, 2), 16),
            t((2, 4), (4, 2), 32),
            t((2, 2), (4, 4), 32),
            t((2, 2), (2, 2), 64),
            t((1, 1), (1, 1), 16),
        ] {
            assert!(ok.valid_copied(), "{ok:?}");
        }
        for bad in [
            t((2, 4), (1, 1), 16), // 2 A fragments for 8 subgroups
            t((1, 1), (4, 4), 32), // 8 A fragments for one subgroup
            t((2, 2), (2, 2), 48),
            t((4, 4), (1, 1), 16),
        ] {
            assert!(!bad.valid_copied(), "{bad:?}");
        }
        assert_eq!(
            t((2, 4), (4, 2), 32).copied_bytes(),
            4 * (128 * 40 + 32 * 136) + 16
        );
    }

    /// Store runs only where C is f32 without bias; the scratch is one fragment per
    /// subgroup the driver may run, none for Store.
    #[test]
    fn epilogue_resolution_and_scratch() {
        use super::CoopEpilogue as E;
        assert_eq!(E::Store.resolve(true), E::Store);
        assert_eq!(E::Store.resolve(false), E::SubgroupScratch);
        assert_eq!(E::Scratch.resolve(true), E::Scratch);
        assert_eq!(E::Scratch.scratch_bytes(256, 32), 8 << 10);
        assert_eq!(E::SubgroupScratch.scratch_bytes(256, 16), 16 << 10);
        assert_eq!(E::Store.scratch_bytes(256, 32), 0);
    }
}
