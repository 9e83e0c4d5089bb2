//! Causal hints: which part of a (batched) product a causal-attention caller uses, so the
//! fragment-copy kernel can skip the rest at tile granularity.
//!
//! Causal attention's six products (src/nn/gpt/attention.rs) compute full T x T work
//! although the mask makes half of it useless:
//! - S = Q K^T and dP = dY V^T: the softmax reads only C[i, j] for j <= i
//!   ([`Causal::SkipAboveDiagonal`]);
//! - Y = P V and dQ = dS K: op(A) (P, dS) is zero above the diagonal, so row i needs only
//!   k <= i ([`Causal::LowerA`]);
//! - dV = P^T dY and dK = dS^T Q: op(A) (P^T, dS^T) is zero below the diagonal, so row i
//!   needs only k >= i ([`Causal::UpperA`]).
//!
//! A hint is a promise by the caller, never a change of the result: the skipped
//! contributions are exact zeros (a zero times a finite value), so the used entries of C
//! come out bit for bit as without the hint unless B holds inf or NaN where A is zero.
//! Only the fragment-copy kernel (`shaders/matmul_coop_copied.wgsl`) acts on it; every
//! other kernel (tiled, general coop, staged, direct, the rescaled and widened paths)
//! computes the whole product, which is correct for every entry the hint says is used.
//! A hinted product never splits K (it runs as one dispatch that honours the hint).

use crate::{Error, Result};

/// Which entries of a product the caller uses, per batch entry (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Causal {
    /// Every entry of C is used; every product term counts.
    #[default]
    None,
    /// C[i, j] for j > i is unspecified: a kernel may leave it unwritten. Square C per
    /// batch entry (M = N). Not acted on today: the fragment-copy kernel's tile-level
    /// early return (decided through workgroupUniformLoad) made the H200's driver
    /// compute wrong products even without the flag, so the kernel computes these tiles.
    SkipAboveDiagonal,
    /// op(A)[i, k] = 0 for k > i: a row tile's K loop may stop after the tile's last row
    /// (rounded up to a K slice). Square op(A) per batch entry (M = K).
    LowerA,
    /// op(A)[i, k] = 0 for k < i: a row tile's K loop may start at the tile's first row
    /// (rounded down to a K slice). Square op(A) per batch entry (M = K).
    UpperA,
}

/// The uniform's `flags` bits of the hints (`shaders/matmul_coop_copied.wgsl`), above the
/// bits the kernels share (bias, accumulate, transposes, strided C).
const FLAG_SKIP_ABOVE_DIAGONAL: u32 = 32;
const FLAG_LOWER_A: u32 = 64;
const FLAG_UPPER_A: u32 = 128;

impl Causal {
    /// `"none"`, `"skip_above_diagonal"`, `"lower_a"` or `"upper_a"` (benchmark tables).
    pub fn name(&self) -> &'static str {
        match self {
            Causal::None => "none",
            Causal::SkipAboveDiagonal => "skip_above_diagonal",
            Causal::LowerA => "lower_a",
            Causal::UpperA => "upper_a",
        }
    }

    /// Ok where the hint can hold for an (M, N, K) product: C square for
    /// `SkipAboveDiagonal`, op(A) square for `LowerA` / `UpperA`; else
    /// `Error::InvalidArgument`.
    pub(super) fn check(self, (m, n, k): (usize, usize, usize)) -> Result<()> {
        let (what, square) = match self {
            Causal::None => return Ok(()),
            Causal::SkipAboveDiagonal => ("C (M = N)", m == n),
            Causal::LowerA | Causal::UpperA => ("op(A) (M = K)", m == k),
        };
        if square {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "matmul: the causal hint {} needs a square {what} per batch entry, got ({m} x {n} x {k})",
                self.name()
            )))
        }
    }

    /// The uniform's flag bits for the fragment-copy kernel.
    pub(super) fn flags(self) -> u32 {
        match self {
            Causal::None => 0,
            Causal::SkipAboveDiagonal => FLAG_SKIP_ABOVE_DIAGONAL,
            Causal::LowerA => FLAG_LOWER_A,
            Causal::UpperA => FLAG_UPPER_A,
        }
    }

    /// Multiply-adds of one (M, N, K) batch entry that the hint says are needed:
    /// T (T + 1) / 2 * N for `LowerA` / `UpperA` (row i needs i + 1, or T - i, terms),
    /// T (T + 1) / 2 * K for `SkipAboveDiagonal` (entries on and below the diagonal),
    /// M N K without a hint. Benchmarks count FLOPs as twice this.
    pub fn needed_macs(self, (m, n, k): (usize, usize, usize)) -> f64 {
        let tri = |t: usize| t as f64 * (t as f64 + 1.0) / 2.0;
        match self {
            Causal::None => m as f64 * n as f64 * k as f64,
            Causal::SkipAboveDiagonal => tri(m) * k as f64,
            Causal::LowerA | Causal::UpperA => tri(m) * n as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Causal;

    #[test]
    fn hints_need_square_matrices() {
        assert!(Causal::None.check((3, 5, 7)).is_ok());
        assert!(Causal::SkipAboveDiagonal.check((64, 64, 16)).is_ok());
        assert!(Causal::SkipAboveDiagonal.check((64, 32, 64)).is_err());
        assert!(Causal::LowerA.check((64, 16, 64)).is_ok());
        assert!(Causal::UpperA.check((64, 64, 32)).is_err());
        assert_eq!(Causal::LowerA.needed_macs((4, 2, 4)), 20.0);
        assert_eq!(Causal::SkipAboveDiagonal.needed_macs((4, 4, 3)), 30.0);
        assert_eq!(Causal::None.needed_macs((4, 2, 4)), 32.0);
        let flags = [Causal::SkipAboveDiagonal, Causal::LowerA, Causal::UpperA].map(Causal::flags);
        assert!(flags.iter().all(|f| f & 31 == 0 && f.count_ones() == 1));
    }
}
