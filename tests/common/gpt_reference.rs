//! f64 reference of a whole GPT-2 forward pass and its loss, straight from the
//! definitions (no shared code with the kernels), for the whole-model tests: loss and
//! logits vs the GPU model, finite differences of the loss for gradient checks.
//!
//! Include with `#[path = "common/gpt_reference.rs"] mod gpt_reference;`.
#![allow(dead_code)]

use halfgrad::nn::gpt::{GptConfig, GptWeights};

/// LayerNorm epsilon of every GPT-2 LayerNorm.
pub const EPS: f64 = 1e-5;

/// The result of [`forward`].
pub struct RefOutput {
    /// `(rows, vocab)` logits, rows = batch x block positions, row-major.
    pub logits: Vec<f64>,
    /// Per-position cross-entropy (natural log), `(rows)`.
    pub losses: Vec<f64>,
    /// Mean of `losses`.
    pub loss: f64,
}

/// Parameters widened to f64, in state-dict order (what [`forward_f64`] perturbs).
pub fn params_f64(w: &GptWeights) -> Vec<Vec<f64>> {
    w.values()
        .iter()
        .map(|v| v.iter().map(|&x| x as f64).collect())
        .collect()
}

/// The forward pass and the mean loss of `w` on `tokens` / `targets`, both `(batch, t)`
/// row-major with `t <= block`.
pub fn forward(
    w: &GptWeights,
    tokens: &[u32],
    targets: &[u32],
    batch: usize,
    t: usize,
) -> RefOutput {
    forward_f64(w.config(), &params_f64(w), tokens, targets, batch, t)
}

/// GELU, tanh approximation (GPT-2's `gelu_new`).
pub fn gelu(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

/// `y[r] = (x[r] - mean) / sqrt(var + eps) * g + b` for each row of width `g.len()`.
fn layer_norm(x: &[f64], g: &[f64], b: &[f64]) -> Vec<f64> {
    let c = g.len();
    let mut y = vec![0.0; x.len()];
    for (row, out) in x.chunks(c).zip(y.chunks_mut(c)) {
        let mean = row.iter().sum::<f64>() / c as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + EPS).sqrt();
        for i in 0..c {
            out[i] = (row[i] - mean) * rstd * g[i] + b[i];
        }
    }
    y
}

/// `y = x W^T + b`: x `(rows, in)`, W `(out, in)`, b `(out)`.
fn linear(x: &[f64], w: &[f64], b: &[f64], inp: usize) -> Vec<f64> {
    let out = b.len();
    let rows = x.len() / inp;
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        let xr = &x[r * inp..(r + 1) * inp];
        for o in 0..out {
            let wo = &w[o * inp..(o + 1) * inp];
            y[r * out + o] = b[o] + xr.iter().zip(wo).map(|(a, b)| a * b).sum::<f64>();
        }
    }
    y
}

/// [`forward`] on f64 parameters `p` (state-dict order, see
/// [`GptConfig::param_specs`]).
pub fn forward_f64(
    config: &GptConfig,
    p: &[Vec<f64>],
    tokens: &[u32],
    targets: &[u32],
    batch: usize,
    t: usize,
) -> RefOutput {
    let (v, c, nh) = (config.vocab, config.n_embd, config.n_head);
    let hd = c / nh;
    assert!(t <= config.block && tokens.len() == batch * t && targets.len() == batch * t);
    let rows = batch * t;
    let (wte, wpe) = (&p[0], &p[1]);
    // Residual stream x: (rows, C).
    let mut x = vec![0.0; rows * c];
    for r in 0..rows {
        let (tok, pos) = (tokens[r] as usize, r % t);
        for i in 0..c {
            x[r * c + i] = wte[tok * c + i] + wpe[pos * c + i];
        }
    }
    let scale = 1.0 / (hd as f64).sqrt();
    for layer in 0..config.n_layer {
        // 12 tensors per block after wte and wpe, in param_specs order.
        let q = &p[2 + 12 * layer..2 + 12 * (layer + 1)];
        let (ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b) =
            (&q[0], &q[1], &q[2], &q[3], &q[4], &q[5]);
        let (ln2_w, ln2_b, fc_w, fc_b, mproj_w, mproj_b) =
            (&q[6], &q[7], &q[8], &q[9], &q[10], &q[11]);
        let h = layer_norm(&x, ln1_w, ln1_b);
        let qkv = linear(&h, attn_w, attn_b, c); // (rows, 3C)
        let mut y = vec![0.0; rows * c];
        for b in 0..batch {
            for head in 0..nh {
                for i in 0..t {
                    let qi = &qkv[(b * t + i) * 3 * c + head * hd..][..hd];
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            let kj = &qkv[(b * t + j) * 3 * c + c + head * hd..][..hd];
                            scale * qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>()
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (j, ej) in e.iter().enumerate() {
                        let vj = &qkv[(b * t + j) * 3 * c + 2 * c + head * hd..][..hd];
                        for d in 0..hd {
                            y[(b * t + i) * c + head * hd + d] += ej / z * vj[d];
                        }
                    }
                }
            }
        }
        let a = linear(&y, proj_w, proj_b, c);
        x.iter_mut().zip(&a).for_each(|(x, a)| *x += a);
        let h2 = layer_norm(&x, ln2_w, ln2_b);
        let u: Vec<f64> = linear(&h2, fc_w, fc_b, c).into_iter().map(gelu).collect();
        let m = linear(&u, mproj_w, mproj_b, 4 * c);
        x.iter_mut().zip(&m).for_each(|(x, m)| *x += m);
    }
    let n = p.len();
    let xf = layer_norm(&x, &p[n - 2], &p[n - 1]);
    // Tied LM head: logits = xf wte^T.
    let logits = linear(&xf, wte, &vec![0.0; v], c);
    let losses: Vec<f64> = (0..rows)
        .map(|r| {
            let row = &logits[r * v..(r + 1) * v];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
            lse - row[targets[r] as usize]
        })
        .collect();
    let loss = losses.iter().sum::<f64>() / rows as f64;
    RefOutput {
        logits,
        losses,
        loss,
    }
}

/// Central finite difference of the mean loss with respect to element `index` of
/// parameter `param` (state-dict order), step `h`, in f64.
#[allow(clippy::too_many_arguments)]
pub fn finite_difference(
    config: &GptConfig,
    p: &[Vec<f64>],
    param: usize,
    index: usize,
    h: f64,
    tokens: &[u32],
    targets: &[u32],
    batch: usize,
    t: usize,
) -> f64 {
    let mut q = p.to_vec();
    q[param][index] += h;
    let up = forward_f64(config, &q, tokens, targets, batch, t).loss;
    q[param][index] -= 2.0 * h;
    let down = forward_f64(config, &q, tokens, targets, batch, t).loss;
    (up - down) / (2.0 * h)
}
