//! The residual add as a graph op: `z = a + b` with the stream `a` and the sum `z` in
//! f32 and the branch `b` (a Linear output) in the activation dtype, as PyTorch autocast
//! keeps it (a 16-bit output added to an f32 tensor gives f32). Backward: `da = dz`
//! (f32) and `db = dz` rounded to the activation dtype.

use crate::kernels::Dispatch;
use crate::nn::graph::{Backward, GraphBuilder, Op, ValueId};
use crate::ops::accumulate::add_into;
use crate::ops::cast::cast;
use crate::{DType, Error, Result};

#[derive(Debug)]
struct ResidualOp {
    a: ValueId,
    b: ValueId,
    z: ValueId,
    // copy a -> z (a cast f32 -> f32), then z += b
    forward: [Dispatch; 2],
}

/// `z = a + b`: a (N, C) f32 stream plus a (N, C) branch of any dtype, summed in f32.
// a: (N, C) f32; b: (N, C) activation dtype -> z: (N, C) f32
pub fn residual_add(g: &mut GraphBuilder<'_>, a: ValueId, b: ValueId) -> Result<ValueId> {
    let (av, bv) = (g.value(a).clone(), g.value(b).clone());
    if av.shape() != bv.shape() {
        return Err(Error::shape(
            "residual add",
            format!("{:?}", av.shape()),
            format!("{:?}", bv.shape()),
        ));
    }
    if av.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch {
            op: "residual add",
            expected: "an f32 residual stream".into(),
            got: av.dtype(),
        });
    }
    let needs = g.needs_grad(a) || g.needs_grad(b);
    let z = g.output(av.shape(), DType::F32, needs)?;
    let zv = g.value(z).clone();
    let forward = [
        cast(g.gpu(), &av, &zv)?,
        add_into(g.gpu(), &bv, &zv, g.ctx().found_inf)?,
    ];
    g.push(ResidualOp { a, b, z, forward });
    Ok(z)
}

impl Op for ResidualOp {
    fn forward(&self) -> &[Dispatch] {
        &self.forward
    }

    fn backward(&self, g: &mut Backward<'_>) -> Result<()> {
        let Some(dz) = g.grad(self.z).cloned() else {
            return Ok(());
        };
        let gpu = g.gpu();
        // da (f32) = dz: a copy when first, an add when another op wrote da already.
        if let Some(da) = g.value_grad(self.a, true)? {
            g.push(if da.accumulate {
                add_into(gpu, &dz, &da.tensor, g.ctx().found_inf)?
            } else {
                cast(gpu, &dz, &da.tensor)?
            });
            g.commit(da)?;
        }
        // db (activation dtype) = dz rounded; an overflow becomes inf, which the loss
        // scaler finds in the f32 parameter gradients computed from it.
        if let Some(db) = g.value_grad(self.b, false)? {
            g.push(cast(gpu, &dz, &db.tensor)?);
            g.commit(db)?;
        }
        Ok(())
    }
}
