//! f64 CPU references of the layers and of a whole MLP, shared by the layer tests and the
//! whole-model finite-difference checks. Shapes as in the layers: x (B, in), w (out, in),
//! row-major.

use halfgrad::nn::{Activation, MlpConfig};

/// f32 values widened to f64 (the references' input).
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn linear_ref(
    x: &[f64],
    w: &[f64],
    bias: Option<&[f64]>,
    b: usize,
    i: usize,
    o: usize,
) -> Vec<f64> {
    let mut y = vec![0.0; b * o];
    for r in 0..b {
        for n in 0..o {
            let mut s = bias.map_or(0.0, |bb| bb[n]);
            for k in 0..i {
                s += x[r * i + k] * w[n * i + k];
            }
            y[r * o + n] = s;
        }
    }
    y
}

/// (dx (B, in), dw (out, in), db (out)) of y = x w^T + b.
pub fn linear_back_ref(
    x: &[f64],
    w: &[f64],
    dy: &[f64],
    b: usize,
    i: usize,
    o: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; b * i];
    let mut dw = vec![0.0; o * i];
    let mut db = vec![0.0; o];
    for r in 0..b {
        for n in 0..o {
            let g = dy[r * o + n];
            db[n] += g;
            for k in 0..i {
                dx[r * i + k] += g * w[n * i + k];
                dw[n * i + k] += g * x[r * i + k];
            }
        }
    }
    (dx, dw, db)
}

const SQRT_2_OVER_PI: f64 = 0.7978845608028654;

pub fn act_ref(kind: Activation, x: f64) -> f64 {
    match kind {
        Activation::Gelu => 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh()),
        Activation::Relu => x.max(0.0),
    }
}

pub fn act_grad_ref(kind: Activation, x: f64) -> f64 {
    match kind {
        Activation::Gelu => {
            let th = (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh();
            0.5 * (1.0 + th)
                + 0.5 * x * (1.0 - th * th) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
        }
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
    }
}

/// Layer norm's epsilon (PyTorch's default, as `ops::layernorm::DEFAULT_EPS`).
const LN_EPS: f64 = 1e-5;

/// (y, mean, rstd) of layer norm over rows of x (B, C).
pub fn ln_ref(
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    b: usize,
    c: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; b * c];
    let mut means = vec![0.0; b];
    let mut rstds = vec![0.0; b];
    for r in 0..b {
        let row = &x[r * c..(r + 1) * c];
        let mean = row.iter().sum::<f64>() / c as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + LN_EPS).sqrt();
        for j in 0..c {
            y[r * c + j] = (row[j] - mean) * rstd * gamma[j] + beta[j];
        }
        means[r] = mean;
        rstds[r] = rstd;
    }
    (y, means, rstds)
}

/// (dx, dgamma, dbeta) of layer norm.
pub fn ln_back_ref(
    x: &[f64],
    gamma: &[f64],
    dy: &[f64],
    b: usize,
    c: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let ones = vec![0.0; c];
    let (_, means, rstds) = ln_ref(x, gamma, &ones, b, c);
    let mut dx = vec![0.0; b * c];
    let mut dg = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    for r in 0..b {
        let xhat: Vec<f64> = (0..c)
            .map(|j| (x[r * c + j] - means[r]) * rstds[r])
            .collect();
        let g: Vec<f64> = (0..c).map(|j| dy[r * c + j] * gamma[j]).collect();
        let mean_g = g.iter().sum::<f64>() / c as f64;
        let mean_gx = (0..c).map(|j| g[j] * xhat[j]).sum::<f64>() / c as f64;
        for j in 0..c {
            dx[r * c + j] = rstds[r] * (g[j] - mean_g - xhat[j] * mean_gx);
            dg[j] += dy[r * c + j] * xhat[j];
            dbeta[j] += dy[r * c + j];
        }
    }
    (dx, dg, dbeta)
}

/// (per-row losses, mean loss, dlogits = (softmax - onehot) * scale / B).
pub fn xent_ref(
    logits: &[f64],
    labels: &[u32],
    b: usize,
    v: usize,
    scale: f64,
) -> (Vec<f64>, f64, Vec<f64>) {
    let mut losses = vec![0.0; b];
    let mut d = vec![0.0; b * v];
    for r in 0..b {
        let row = &logits[r * v..(r + 1) * v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
        losses[r] = lse - row[labels[r] as usize];
        for j in 0..v {
            let onehot = if j == labels[r] as usize { 1.0 } else { 0.0 };
            d[r * v + j] = ((row[j] - lse).exp() - onehot) * scale / b as f64;
        }
    }
    let mean = losses.iter().sum::<f64>() / b as f64;
    (losses, mean, d)
}

/// The mean loss of an MLP computed in f64 from its parameters (state-dict order).
pub fn mlp_loss_ref(
    cfg: &MlpConfig,
    params: &[Vec<f64>],
    x: &[f64],
    labels: &[u32],
    b: usize,
) -> f64 {
    let mut h = x.to_vec();
    let mut pi = 0;
    let last = cfg.widths.len() - 2;
    for (li, pair) in cfg.widths.windows(2).enumerate() {
        let (i, o) = (pair[0], pair[1]);
        let w = &params[pi];
        pi += 1;
        let bias = if cfg.bias {
            pi += 1;
            Some(params[pi - 1].as_slice())
        } else {
            None
        };
        h = linear_ref(&h, w, bias, b, i, o);
        if li == last {
            break;
        }
        if cfg.layer_norm {
            h = ln_ref(&h, &params[pi], &params[pi + 1], b, o).0;
            pi += 2;
        }
        h = h.iter().map(|&v| act_ref(cfg.activation, v)).collect();
    }
    xent_ref(&h, labels, b, cfg.classes(), 1.0).1
}
