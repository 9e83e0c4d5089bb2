//! The GPT-2 kernels on the GPU (lavapipe in CI) against f64 CPU references: token +
//! position embedding (forward; deterministic backward, exact in summation order and
//! bit-identical across runs; accumulate mode), the causal attention softmax (forward and
//! backward at T = 1, 7, 65, 257 in every precision and both f16 paths), f16 overflow of
//! the score gradient raising found-inf, the existing softmax cross-entropy at vocab 256
//! with rows = batch x block, and an f64 reference of the whole attention (q, k, v -> y
//! and its backward) checked against finite differences and against the GPU softmax with
//! CPU products, for the model code to reuse once batched products land.

mod common;

use common::{gpu, gpus_for_f16, random_vec, rel_err, rng, rounded, tol, TOL_F32};
use halfgrad::amp::{constant_scale, OverflowFlag, Policy, Precision};
use halfgrad::nn::{LayerCtx, Node, SoftmaxCrossEntropy};
use halfgrad::ops::attention::{default_scale, softmax_backward, softmax_forward};
use halfgrad::ops::embedding::{self, token_index, TokenIndex};
use halfgrad::{DType, Error, Gpu, Tensor};
use rand::Rng;

// ---------------------------------------------------------------------------------------
// Helpers

/// The devices a dtype is tested on: both f16 paths for F16, the default device otherwise.
fn devices(dt: DType) -> Vec<(&'static str, &'static Gpu)> {
    match dt {
        DType::F16 => gpus_for_f16(),
        _ => vec![("default", gpu())],
    }
}

fn poison(t: &Tensor) {
    t.write_f32(&vec![f32::NAN; t.len()]).unwrap();
}

fn read(t: &Tensor) -> Vec<f32> {
    t.to_f32_vec().unwrap()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    println!("  {what}: rel err {e:.2e} (tol {tol:.0e})");
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A (N) u32 tensor holding `data`: the token batch.
fn u32_tensor(g: &Gpu, data: &[u32]) -> Tensor {
    Tensor::from_u32(g, &[data.len()], data).unwrap()
}

fn random_tokens(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut r = rng(seed);
    (0..n).map(|_| r.random_range(0..vocab as u32)).collect()
}

// ---------------------------------------------------------------------------------------
// Embedding

/// One embedding case: B blocks of T tokens, C channels, vocabulary V, position table of
/// T_max rows.
#[derive(Debug, Clone, Copy)]
struct EmbCase {
    b: usize,
    t: usize,
    c: usize,
    v: usize,
    t_max: usize,
}

const EMB_CASES: [EmbCase; 5] = [
    EmbCase {
        b: 1,
        t: 1,
        c: 1,
        v: 1,
        t_max: 1,
    },
    EmbCase {
        b: 3,
        t: 7,
        c: 33,
        v: 5,
        t_max: 9,
    },
    EmbCase {
        b: 2,
        t: 65,
        c: 70,
        v: 256,
        t_max: 65,
    },
    EmbCase {
        b: 4,
        t: 17,
        c: 129,
        v: 3,
        t_max: 20,
    },
    // C a multiple of 8: the forward's 16-byte octet path.
    EmbCase {
        b: 2,
        t: 9,
        c: 64,
        v: 7,
        t_max: 12,
    },
];

struct EmbData {
    tokens: Vec<u32>,
    wte: Vec<f32>,
    wpe: Vec<f32>,
    dx: Vec<f32>,
}

fn emb_data(k: EmbCase, seed: u64) -> EmbData {
    let n = k.b * k.t;
    let mut r = rng(seed);
    EmbData {
        tokens: random_tokens(seed ^ 0x55, n, k.v),
        wte: random_vec(&mut r, k.v * k.c, 1.0),
        wpe: random_vec(&mut r, k.t_max * k.c, 1.0),
        dx: random_vec(&mut r, n * k.c, 1.0),
    }
}

/// (dwte, dwpe).
type Grads<T> = (Vec<T>, Vec<T>);

/// (dwte, dwpe) summed in f32 in the kernel's order (ascending positions, ascending
/// batch rows) on top of `old` when accumulating, and the same sums in f64.
fn emb_back_ref(
    k: EmbCase,
    d: &EmbData,
    old: Option<(&[f32], &[f32])>,
) -> (Grads<f32>, Grads<f64>) {
    let n = k.b * k.t;
    let mut wte32 = vec![0f32; k.v * k.c];
    let mut wte64 = vec![0f64; k.v * k.c];
    for p in 0..n {
        let tok = d.tokens[p] as usize;
        for c in 0..k.c {
            wte32[tok * k.c + c] += d.dx[p * k.c + c];
            wte64[tok * k.c + c] += d.dx[p * k.c + c] as f64;
        }
    }
    let mut wpe32 = vec![0f32; k.t_max * k.c];
    let mut wpe64 = vec![0f64; k.t_max * k.c];
    for b in 0..k.b {
        for t in 0..k.t {
            for c in 0..k.c {
                let g = d.dx[(b * k.t + t) * k.c + c];
                wpe32[t * k.c + c] += g;
                wpe64[t * k.c + c] += g as f64;
            }
        }
    }
    if let Some((ote, ope)) = old {
        for (s, o) in wte32.iter_mut().zip(ote) {
            *s += o;
        }
        for (s, o) in wte64.iter_mut().zip(ote) {
            *s += *o as f64;
        }
        for (s, o) in wpe32.iter_mut().zip(ope) {
            *s += o;
        }
        for (s, o) in wpe64.iter_mut().zip(ope) {
            *s += *o as f64;
        }
    }
    ((wte32, wpe32), (wte64, wpe64))
}

#[test]
fn embedding_forward_matches_f64_exactly() {
    let g = gpu();
    for (ci, &k) in EMB_CASES.iter().enumerate() {
        println!("embedding forward {k:?}");
        let d = emb_data(k, 100 + ci as u64);
        let n = k.b * k.t;
        let wte = Tensor::from_f32(g, &[k.v, k.c], &d.wte, DType::F32).unwrap();
        let wpe = Tensor::from_f32(g, &[k.t_max, k.c], &d.wpe, DType::F32).unwrap();
        let x = Tensor::empty(g, &[n, k.c], DType::F32).unwrap();
        poison(&x);
        let tokens = u32_tensor(g, &d.tokens);
        let f = embedding::forward(g, &tokens, k.t, &wte, &wpe, &x).unwrap();
        g.run(&[&f]).unwrap();
        let got = read(&x);
        // One f32 add of two f32 values: correctly rounded, so exactly the host's sum.
        let want: Vec<f32> = (0..n * k.c)
            .map(|i| {
                let (p, c) = (i / k.c, i % k.c);
                d.wte[d.tokens[p] as usize * k.c + c] + d.wpe[(p % k.t) * k.c + c]
            })
            .collect();
        assert_eq!(bits(&got), bits(&want), "x differs from the f32 sum");
        assert_close("x", &got, &f64s(&want), TOL_F32);
    }
}

#[test]
fn embedding_forward_writes_nan_rows_for_out_of_range_tokens() {
    // The host refuses such tokens; a raw buffer that bypasses the check still reads
    // nothing out of bounds and shows the bad row as NaN.
    let g = gpu();
    // C = 5: one element an invocation; C = 16: octets (16-byte accesses).
    for c in [5, 16] {
        let (v, t) = (4, 3);
        let wte = Tensor::full(g, &[v, c], DType::F32, 1.0).unwrap();
        let wpe = Tensor::full(g, &[t, c], DType::F32, 0.5).unwrap();
        let x = Tensor::empty(g, &[t, c], DType::F32).unwrap();
        poison(&x);
        let tokens = u32_tensor(g, &[0, 4, 3]);
        g.run(&[&embedding::forward(g, &tokens, t, &wte, &wpe, &x).unwrap()])
            .unwrap();
        let got = read(&x);
        assert!(got[..c].iter().all(|&e| e == 1.5));
        assert!(got[c..2 * c].iter().all(|e| e.is_nan()), "{got:?}");
        assert!(got[2 * c..].iter().all(|&e| e == 1.5));
    }
}

/// Runs the embedding backward of case `k` into fresh (poisoned or `old`) gradients.
fn run_emb_backward(
    g: &Gpu,
    k: EmbCase,
    d: &EmbData,
    old: Option<(&[f32], &[f32])>,
) -> (Vec<f32>, Vec<f32>) {
    let n = k.b * k.t;
    let dx = Tensor::from_f32(g, &[n, k.c], &d.dx, DType::F32).unwrap();
    let dwte = Tensor::empty(g, &[k.v, k.c], DType::F32).unwrap();
    let dwpe = Tensor::empty(g, &[k.t_max, k.c], DType::F32).unwrap();
    match old {
        Some((ote, ope)) => {
            dwte.write_f32(ote).unwrap();
            dwpe.write_f32(ope).unwrap();
        }
        None => {
            poison(&dwte);
            poison(&dwpe);
        }
    }
    let index = TokenIndex::new(g, k.v, n).unwrap();
    index.write(g, &d.tokens).unwrap();
    let acc = old.is_some();
    let [a, b] = embedding::backward(g, &index, k.t, &dx, &dwte, acc, &dwpe, acc).unwrap();
    g.run(&[&a, &b]).unwrap();
    (read(&dwte), read(&dwpe))
}

#[test]
fn embedding_backward_sums_in_order_and_is_deterministic() {
    // Tolerance: the kernel's f32 sums equal the host's f32 sums in the same order
    // (ascending positions, ascending batch rows) bit for bit; against f64 they are within
    // TOL_F32. Unused vocabulary rows and position rows >= T are written 0 (they start as
    // NaN). Two runs give identical bits.
    let g = gpu();
    for (ci, &k) in EMB_CASES.iter().enumerate() {
        println!("embedding backward {k:?}");
        let d = emb_data(k, 200 + ci as u64);
        let ((te32, pe32), (te64, pe64)) = emb_back_ref(k, &d, None);
        let (dwte, dwpe) = run_emb_backward(g, k, &d, None);
        assert_eq!(
            bits(&dwte),
            bits(&te32),
            "dwte differs from the ordered f32 sum"
        );
        assert_eq!(
            bits(&dwpe),
            bits(&pe32),
            "dwpe differs from the ordered f32 sum"
        );
        assert_close("dwte", &dwte, &te64, TOL_F32);
        assert_close("dwpe", &dwpe, &pe64, TOL_F32);
        let again = run_emb_backward(g, k, &d, None);
        assert_eq!(bits(&again.0), bits(&dwte), "dwte not deterministic");
        assert_eq!(bits(&again.1), bits(&dwpe), "dwpe not deterministic");
    }
}

#[test]
fn embedding_backward_with_one_token_everywhere() {
    // Every position uses token 2 of 7: one row sums all N positions, the rest are 0.
    let g = gpu();
    let k = EmbCase {
        b: 5,
        t: 33,
        c: 65,
        v: 7,
        t_max: 40,
    };
    let mut d = emb_data(k, 300);
    d.tokens = vec![2; k.b * k.t];
    let ((te32, pe32), (te64, _)) = emb_back_ref(k, &d, None);
    let (dwte, dwpe) = run_emb_backward(g, k, &d, None);
    assert_eq!(bits(&dwte), bits(&te32));
    assert_eq!(bits(&dwpe), bits(&pe32));
    assert_close("dwte", &dwte, &te64, TOL_F32);
    let zero_rows = dwte
        .chunks(k.c)
        .enumerate()
        .filter(|(v, _)| *v != 2)
        .all(|(_, row)| row.iter().all(|&e| e.to_bits() == 0));
    assert!(zero_rows, "unused rows must be +0.0");
}

#[test]
fn embedding_backward_accumulates_into_existing_gradients() {
    let g = gpu();
    for (ci, &k) in EMB_CASES.iter().enumerate().skip(1) {
        println!("embedding backward (accumulate) {k:?}");
        let d = emb_data(k, 400 + ci as u64);
        let mut r = rng(500 + ci as u64);
        let ote = random_vec(&mut r, k.v * k.c, 2.0);
        let ope = random_vec(&mut r, k.t_max * k.c, 2.0);
        let old = Some((ote.as_slice(), ope.as_slice()));
        let ((te32, pe32), (te64, pe64)) = emb_back_ref(k, &d, old);
        let (dwte, dwpe) = run_emb_backward(g, k, &d, old);
        assert_eq!(bits(&dwte), bits(&te32));
        assert_eq!(bits(&dwpe), bits(&pe32));
        assert_close("dwte", &dwte, &te64, TOL_F32);
        assert_close("dwpe", &dwpe, &pe64, TOL_F32);
    }
}

#[test]
fn embedding_backward_accumulate_flags_are_per_output() {
    // dwte accumulates (the tied LM head wrote it first), dwpe is overwritten.
    let g = gpu();
    let k = EmbCase {
        b: 2,
        t: 5,
        c: 3,
        v: 4,
        t_max: 6,
    };
    let d = emb_data(k, 600);
    let n = k.b * k.t;
    let dx = Tensor::from_f32(g, &[n, k.c], &d.dx, DType::F32).unwrap();
    let dwte = Tensor::full(g, &[k.v, k.c], DType::F32, 10.0).unwrap();
    let dwpe = Tensor::full(g, &[k.t_max, k.c], DType::F32, f32::NAN).unwrap();
    let index = TokenIndex::new(g, k.v, n).unwrap();
    index.write(g, &d.tokens).unwrap();
    let [a, b] = embedding::backward(g, &index, k.t, &dx, &dwte, true, &dwpe, false).unwrap();
    g.run(&[&a, &b]).unwrap();
    let ((te32, pe32), _) = emb_back_ref(k, &d, None);
    let want_te: Vec<f32> = te32.iter().map(|s| s + 10.0).collect();
    assert_eq!(bits(&read(&dwte)), bits(&want_te));
    assert_eq!(bits(&read(&dwpe)), bits(&pe32));
}

#[test]
fn token_index_is_a_stable_counting_sort() {
    let (offsets, positions) = token_index(&[2, 0, 2, 3, 0, 2], 5).unwrap();
    assert_eq!(offsets, [0, 2, 2, 5, 6, 6]);
    assert_eq!(positions, [1, 4, 0, 2, 5, 3]);
    let (offsets, positions) = token_index(&[], 3).unwrap();
    assert_eq!((offsets, positions), (vec![0, 0, 0, 0], vec![]));
    assert!(matches!(
        token_index(&[1, 5, 2], 5),
        Err(Error::LabelOutOfRange {
            index: 1,
            label: 5,
            classes: 5
        })
    ));
}

#[test]
fn embedding_bad_inputs_are_typed_errors() {
    let g = gpu();
    let index = TokenIndex::new(g, 4, 6).unwrap();
    assert!(matches!(
        index.write(g, &[0, 1, 2]),
        Err(Error::DataLength {
            expected: 6,
            got: 3,
            ..
        })
    ));
    assert!(matches!(
        index.write(g, &[0, 1, 2, 3, 4, 0]),
        Err(Error::LabelOutOfRange {
            index: 4,
            label: 4,
            classes: 4
        })
    ));
    assert!(TokenIndex::new(g, 0, 6).is_err());
    let wte = Tensor::zeros(g, &[4, 3], DType::F32).unwrap();
    let wpe = Tensor::zeros(g, &[2, 3], DType::F32).unwrap();
    let x = Tensor::zeros(g, &[6, 3], DType::F32).unwrap();
    let tokens = u32_tensor(g, &[0; 6]);
    // Block 3 > the 2 rows of wpe; 6 positions are not whole blocks of 4.
    assert!(matches!(
        embedding::forward(g, &tokens, 3, &wte, &wpe, &x),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        embedding::forward(g, &tokens, 4, &wte, &wpe, &x),
        Err(Error::InvalidArgument(_))
    ));
    let x16 = Tensor::zeros(g, &[6, 3], DType::F16).unwrap();
    assert!(embedding::forward(g, &tokens, 2, &wte, &wpe, &x16).is_err());
    let short = u32_tensor(g, &[0; 4]);
    let x8 = Tensor::zeros(g, &[8, 3], DType::F32).unwrap();
    assert!(matches!(
        embedding::forward(g, &short, 2, &wte, &wpe, &x8),
        Err(Error::ShapeMismatch { .. })
    ));
    let dwte = Tensor::zeros(g, &[4, 3], DType::F32).unwrap();
    let dwpe = Tensor::zeros(g, &[2, 3], DType::F32).unwrap();
    assert!(matches!(
        embedding::backward(g, &index, 2, &x8, &dwte, false, &dwpe, false),
        Err(Error::ShapeMismatch { .. })
    ));
    let dwte5 = Tensor::zeros(g, &[5, 3], DType::F32).unwrap();
    assert!(embedding::backward(g, &index, 2, &x, &dwte5, false, &dwpe, false).is_err());
    embedding::backward(g, &index, 2, &x, &dwte, false, &dwpe, false).unwrap();
}

// ---------------------------------------------------------------------------------------
// Causal attention softmax

/// p = causal softmax(scale * s) over rows of T, in f64.
fn softmax_ref(s: &[f64], rows: usize, t: usize, scale: f64) -> Vec<f64> {
    let mut p = vec![0.0; rows * t];
    for r in 0..rows {
        let i = r % t;
        let row = &s[r * t..(r + 1) * t];
        let m = row[..=i]
            .iter()
            .map(|x| scale * x)
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row[..=i].iter().map(|x| (scale * x - m).exp()).sum();
        for j in 0..=i {
            p[r * t + j] = (scale * row[j] - m).exp() / sum;
        }
    }
    p
}

/// ds = scale * p * (dp - rowsum(p * dp)) on and below the diagonal, in f64.
fn softmax_back_ref(p: &[f64], dp: &[f64], rows: usize, t: usize, scale: f64) -> Vec<f64> {
    let mut ds = vec![0.0; rows * t];
    for r in 0..rows {
        let i = r % t;
        let o = r * t;
        let dot: f64 = (0..=i).map(|j| p[o + j] * dp[o + j]).sum();
        for j in 0..=i {
            ds[o + j] = scale * p[o + j] * (dp[o + j] - dot);
        }
    }
    ds
}

/// (B, H, T, head_dim): T = 1, 7, 65, 257, head dims 8, 16, 64, several heads.
const ATTN_CASES: [(usize, usize, usize, usize); 5] = [
    (1, 1, 1, 8),
    (2, 3, 7, 16),
    (3, 1, 7, 64),
    (2, 2, 65, 8),
    (1, 3, 257, 64),
];

fn assert_upper_zero(what: &str, got: &[f32], rows: usize, t: usize) {
    for r in 0..rows {
        for j in (r % t + 1)..t {
            assert_eq!(got[r * t + j], 0.0, "{what}[{r}, {j}] above the diagonal");
        }
    }
}

fn check_softmax_forward(
    g: &Gpu,
    dt: DType,
    case: (usize, usize, usize, usize),
    seed: u64,
    spread: f32,
) {
    let (b, h, t, hd) = case;
    let rows = b * h * t;
    let scale = default_scale(hd);
    let mut r = rng(seed);
    // Scores of q . k for unit-ish q, k: ~sqrt(hd), so scale * s ~ spread.
    let s_host = random_vec(&mut r, rows * t, spread / scale);
    let s = Tensor::from_f32(g, &[b, h, t, t], &s_host, DType::F32).unwrap();
    let p = Tensor::empty(g, &[b, h, t, t], dt).unwrap();
    poison(&p);
    g.run(&[&softmax_forward(g, &s, scale, &p).unwrap()])
        .unwrap();
    let got = read(&p);
    let want = softmax_ref(&f64s(&s_host), rows, t, scale as f64);
    assert_upper_zero("p", &got, rows, t);
    assert_close("p", &got, &want, tol(dt));
}

#[test]
fn attention_softmax_forward_matches_f64() {
    for dt in DType::ALL {
        for (path, g) in devices(dt) {
            for (ci, &case) in ATTN_CASES.iter().enumerate() {
                println!("softmax forward {dt} {path} (B, H, T, hd) = {case:?}");
                check_softmax_forward(g, dt, case, 700 + ci as u64, 4.0);
            }
        }
    }
}

#[test]
fn attention_softmax_forward_subtracts_the_max_for_huge_scores() {
    // scale * s ~ 1e4: exp would overflow f32 without the max subtraction.
    for (path, g) in gpus_for_f16() {
        println!("f16 {path}");
        check_softmax_forward(g, DType::F16, (1, 2, 65, 16), 800, 1e4);
    }
    check_softmax_forward(gpu(), DType::F32, (2, 1, 7, 8), 801, 1e4);
}

#[allow(clippy::too_many_arguments)]
fn check_softmax_backward(
    g: &Gpu,
    dt: DType,
    dp_dt: DType,
    case: (usize, usize, usize, usize),
    seed: u64,
    dp_scale: f32,
) {
    let (b, h, t, hd) = case;
    let rows = b * h * t;
    let scale = default_scale(hd);
    let mut r = rng(seed);
    let s_host = random_vec(&mut r, rows * t, 3.0 / scale);
    // p as stored by the forward (rounded to dt); dp as stored in its dtype.
    let p_host: Vec<f32> = softmax_ref(&f64s(&s_host), rows, t, scale as f64)
        .iter()
        .map(|&x| x as f32)
        .collect();
    let p_host = rounded(&p_host, dt);
    let dp_host = rounded(&random_vec(&mut r, rows * t, dp_scale), dp_dt);
    let shape = [b, h, t, t];
    let p = Tensor::from_f32(g, &shape, &p_host, dt).unwrap();
    let dp = Tensor::from_f32(g, &shape, &dp_host, dp_dt).unwrap();
    let ds = Tensor::empty(g, &shape, dt).unwrap();
    poison(&ds);
    let flag = OverflowFlag::new(g).unwrap();
    g.run(&[&softmax_backward(g, &p, &dp, scale, &ds, &flag).unwrap()])
        .unwrap();
    let got = read(&ds);
    let want = softmax_back_ref(&f64s(&p_host), &f64s(&dp_host), rows, t, scale as f64);
    assert_upper_zero("ds", &got, rows, t);
    assert_close("ds", &got, &want, tol(dt));
    assert!(!flag.is_raised_blocking(g).unwrap(), "no overflow expected");
}

#[test]
fn attention_softmax_backward_matches_f64() {
    for dt in DType::ALL {
        for (path, g) in devices(dt) {
            for dp_dt in [DType::F32, dt] {
                for (ci, &case) in ATTN_CASES.iter().enumerate() {
                    println!("softmax backward {dt} (dp {dp_dt}) {path} (B, H, T, hd) = {case:?}");
                    check_softmax_backward(g, dt, dp_dt, case, 900 + ci as u64, 1.0);
                }
                if dp_dt == dt {
                    break; // F32: the two dp dtypes are the same
                }
            }
        }
    }
}

#[test]
fn attention_softmax_backward_carries_the_loss_scale() {
    // dp scaled by 1024 (as under loss scaling): ds in f16 stays accurate.
    for (path, g) in gpus_for_f16() {
        println!("f16 {path}");
        check_softmax_backward(g, DType::F16, DType::F16, (2, 2, 65, 16), 950, 1024.0);
    }
}

#[test]
fn attention_softmax_backward_overflow_raises_found_inf() {
    // T = 2, row 1: p = [0.5, 0.5], dp = [1e6, -1e6] (f32), scale 0.5: ds = +-2.5e5 > 65504.
    for (path, g) in gpus_for_f16() {
        println!("f16 {path}");
        let p = Tensor::from_f32(g, &[1, 2, 2], &[1.0, 0.0, 0.5, 0.5], DType::F16).unwrap();
        let dp = Tensor::from_f32(g, &[1, 2, 2], &[0.0, 0.0, 1e6, -1e6], DType::F32).unwrap();
        let ds = Tensor::empty(g, &[1, 2, 2], DType::F16).unwrap();
        let flag = OverflowFlag::new(g).unwrap();
        g.run(&[&softmax_backward(g, &p, &dp, 0.5, &ds, &flag).unwrap()])
            .unwrap();
        assert!(
            flag.is_raised_blocking(g).unwrap(),
            "f16 overflow must raise found_inf"
        );
        let got = read(&ds);
        assert_eq!(got[..2], [0.0, 0.0]);
        assert!(got[2].is_infinite() && got[3].is_infinite(), "{got:?}");
    }
}

#[test]
fn attention_softmax_bad_inputs_are_typed_errors() {
    let g = gpu();
    let flag = OverflowFlag::new(g).unwrap();
    let s = Tensor::zeros(g, &[2, 3, 3], DType::F32).unwrap();
    let p = Tensor::zeros(g, &[2, 3, 3], DType::F16).unwrap();
    let rect = Tensor::zeros(g, &[2, 3, 4], DType::F32).unwrap();
    let other = Tensor::zeros(g, &[3, 3, 3], DType::F16).unwrap();
    let s16 = Tensor::zeros(g, &[2, 3, 3], DType::F16).unwrap();
    assert!(matches!(
        softmax_forward(g, &rect, 0.5, &p),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        softmax_forward(g, &s, 0.5, &other),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        softmax_forward(g, &s16, 0.5, &p),
        Err(Error::DTypeMismatch { .. })
    ));
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            softmax_forward(g, &s, bad, &p),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        softmax_backward(g, &p, &s, 0.5, &other, &flag),
        Err(Error::ShapeMismatch { .. })
    ));
    softmax_forward(g, &s, 0.5, &p).unwrap();
    softmax_backward(g, &p, &s, 0.5, &p.clone(), &flag).unwrap();
}

// ---------------------------------------------------------------------------------------
// The existing softmax cross-entropy at the GPT's sizes: vocab 256, rows = batch x block

#[test]
fn cross_entropy_at_vocab_256_with_batch_times_block_rows() {
    let (b, t, v) = (4, 65, 256);
    let rows = b * t;
    for precision in [Precision::F32, Precision::F16, Precision::BF16] {
        let policy = Policy::new(precision);
        let dt = policy.activation;
        for (path, g) in devices(dt) {
            println!("softmax xent {precision} {path} rows {b} x {t}, vocab {v}");
            let flag = OverflowFlag::new(g).unwrap();
            let ctx = LayerCtx::new(g, policy, &flag);
            let scale = 1024.0f32;
            let scale_buf = constant_scale(g, scale).unwrap();
            let mut r = rng(1000);
            let z_host = random_vec(&mut r, rows * v, 4.0);
            let logits = Node {
                value: Tensor::from_f32(g, &[rows, v], &z_host, dt).unwrap(),
                grad: Some(Tensor::full(g, &[rows, v], dt, f32::NAN).unwrap()),
            };
            let loss = SoftmaxCrossEntropy::new(&ctx, &logits, &scale_buf).unwrap();
            let labels = random_tokens(1001, rows, v);
            loss.set_labels(g, &labels).unwrap();
            poison(loss.losses());
            poison(loss.loss());
            let mut enc = g.encoder("test");
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("test"),
                    timestamp_writes: None,
                });
                loss.encode_forward(&mut pass);
                loss.encode_backward(&mut pass);
            }
            g.submit(enc.finish()).unwrap();
            // f64 reference on the stored logits.
            let z = f64s(&rounded(&z_host, dt));
            let mut losses = vec![0.0; rows];
            let mut dz = vec![0.0; rows * v];
            for row in 0..rows {
                let zr = &z[row * v..(row + 1) * v];
                let m = zr.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + zr.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
                let label = labels[row] as usize;
                losses[row] = lse - zr[label];
                for j in 0..v {
                    let onehot = if j == label { 1.0 } else { 0.0 };
                    dz[row * v + j] = ((zr[j] - lse).exp() - onehot) * scale as f64 / rows as f64;
                }
            }
            let mean = losses.iter().sum::<f64>() / rows as f64;
            assert_close("losses", &read(loss.losses()), &losses, TOL_F32);
            assert_close("mean loss", &read(loss.loss()), &[mean], TOL_F32);
            assert_close(
                "dlogits",
                &read(logits.grad.as_ref().unwrap()),
                &dz,
                tol(dt),
            );
            assert!(!flag.is_raised_blocking(g).unwrap());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Whole causal attention in f64, for the model code (q, k, v -> y and back)

/// Causal multi-head attention on per-head matrices, in f64.
// q, k, v: (BH, T, D); returns y: (BH, T, D) and p: (BH, T, T)
// y[i] = sum_{j <= i} softmax_j(q_i . k_j / sqrt(D)) v[j]
fn attention_ref(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    bh: usize,
    t: usize,
    d: usize,
) -> (Vec<f64>, Vec<f64>) {
    let scale = 1.0 / (d as f64).sqrt();
    let mut s = vec![0.0; bh * t * t];
    for h in 0..bh {
        for i in 0..t {
            for j in 0..t {
                s[(h * t + i) * t + j] = (0..d)
                    .map(|c| q[(h * t + i) * d + c] * k[(h * t + j) * d + c])
                    .sum();
            }
        }
    }
    let p = softmax_ref(&s, bh * t, t, scale);
    (matmul_pv(&p, v, bh, t, d), p)
}

/// y = p @ v per head.
// p: (BH, T, T), v: (BH, T, D) -> (BH, T, D)
fn matmul_pv(p: &[f64], v: &[f64], bh: usize, t: usize, d: usize) -> Vec<f64> {
    let mut y = vec![0.0; bh * t * d];
    for h in 0..bh {
        for i in 0..t {
            for j in 0..t {
                let pij = p[(h * t + i) * t + j];
                for c in 0..d {
                    y[(h * t + i) * d + c] += pij * v[(h * t + j) * d + c];
                }
            }
        }
    }
    y
}

/// (dq, dk, dv) of the attention for the upstream gradient dy, in f64.
// q, k, v, dy: (BH, T, D)
fn attention_back_ref(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dy: &[f64],
    bh: usize,
    t: usize,
    d: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let scale = 1.0 / (d as f64).sqrt();
    let (_, p) = attention_ref(q, k, v, bh, t, d);
    // dp = dy @ v^T, dv = p^T @ dy
    let mut dp = vec![0.0; bh * t * t];
    let mut dv = vec![0.0; bh * t * d];
    for h in 0..bh {
        for i in 0..t {
            for j in 0..t {
                let mut acc = 0.0;
                for c in 0..d {
                    acc += dy[(h * t + i) * d + c] * v[(h * t + j) * d + c];
                    dv[(h * t + j) * d + c] += p[(h * t + i) * t + j] * dy[(h * t + i) * d + c];
                }
                dp[(h * t + i) * t + j] = acc;
            }
        }
    }
    let ds = softmax_back_ref(&p, &dp, bh * t, t, scale);
    (
        ds_times(&ds, k, bh, t, d, false),
        ds_times(&ds, q, bh, t, d, true),
        dv,
    )
}

/// dq = ds @ k (transpose false) or dk = ds^T @ q (transpose true), per head.
fn ds_times(ds: &[f64], m: &[f64], bh: usize, t: usize, d: usize, transpose: bool) -> Vec<f64> {
    let mut out = vec![0.0; bh * t * d];
    for h in 0..bh {
        for i in 0..t {
            for j in 0..t {
                let g = ds[(h * t + i) * t + j];
                let (to, from) = if transpose { (j, i) } else { (i, j) };
                for c in 0..d {
                    out[(h * t + to) * d + c] += g * m[(h * t + from) * d + c];
                }
            }
        }
    }
    out
}

#[test]
fn attention_reference_backward_matches_finite_differences() {
    let (bh, t, d) = (2, 5, 3);
    let mut r = rng(1100);
    let q = f64s(&random_vec(&mut r, bh * t * d, 1.0));
    let k = f64s(&random_vec(&mut r, bh * t * d, 1.0));
    let v = f64s(&random_vec(&mut r, bh * t * d, 1.0));
    let dy = f64s(&random_vec(&mut r, bh * t * d, 1.0));
    let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
        let (y, _) = attention_ref(q, k, v, bh, t, d);
        y.iter().zip(&dy).map(|(a, b)| a * b).sum()
    };
    let (dq, dk, dv) = attention_back_ref(&q, &k, &v, &dy, bh, t, d);
    let h = 1e-6;
    for (which, grad) in [(0, &dq), (1, &dk), (2, &dv)] {
        for i in 0..bh * t * d {
            let mut args = [q.clone(), k.clone(), v.clone()];
            args[which][i] += h;
            let up = loss(&args[0], &args[1], &args[2]);
            args[which][i] -= 2.0 * h;
            let down = loss(&args[0], &args[1], &args[2]);
            let fd = (up - down) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() < 1e-7,
                "input {which}[{i}]: fd {fd} vs {}",
                grad[i]
            );
        }
    }
    // Causality: y at query i ignores keys and values after i.
    let (y0, _) = attention_ref(&q, &k, &v, bh, t, d);
    let mut v2 = v.clone();
    for c in 0..d {
        v2[(t - 1) * d + c] += 1.0; // head 0, last position
    }
    let (y1, _) = attention_ref(&q, &k, &v2, bh, t, d);
    assert_eq!(y0[..(t - 1) * d], y1[..(t - 1) * d]);
}

#[test]
fn gpu_softmax_composes_into_attention() {
    // The model's composition with the products done on the host as the batched GPU
    // products will do them (16-bit operands, f32 accumulation): s = q k^T (f32), the GPU
    // softmax, y = p v; then dp = dy v^T, the GPU softmax backward, dq = ds k,
    // dk = ds^T q, dv = p^T dy. Checked against the f64 attention reference.
    for dt in DType::ALL {
        for (path, g) in devices(dt) {
            for (ci, &(b, h, t, d)) in ATTN_CASES[..4].iter().enumerate() {
                println!("attention {dt} {path} (B, H, T, D) = {:?}", (b, h, t, d));
                let bh = b * h;
                let mut r = rng(1200 + ci as u64);
                let [q, k, v, dy] =
                    [0; 4].map(|_| rounded(&random_vec(&mut r, bh * t * d, 1.0), dt));
                let [q64, k64, v64, dy64] = [&q, &k, &v, &dy].map(|x| f64s(x));
                // Host products in f32 accumulation, as the GPU's.
                let prod =
                    |a: &[f32], bm: &[f32], ta: bool, tb: bool, m: usize, n: usize, kk: usize| {
                        // per head: a (m, kk) or its transpose, bm (kk, n) or its transpose
                        let mut out = vec![0f32; bh * m * n];
                        for hh in 0..bh {
                            for i in 0..m {
                                for j in 0..n {
                                    let mut acc = 0f32;
                                    for c in 0..kk {
                                        let av = if ta {
                                            a[hh * kk * m + c * m + i]
                                        } else {
                                            a[hh * m * kk + i * kk + c]
                                        };
                                        let bv = if tb {
                                            bm[hh * n * kk + j * kk + c]
                                        } else {
                                            bm[hh * kk * n + c * n + j]
                                        };
                                        acc += av * bv;
                                    }
                                    out[hh * m * n + i * n + j] = acc;
                                }
                            }
                        }
                        out
                    };
                let s = prod(&q, &k, false, true, t, t, d);
                let st = Tensor::from_f32(g, &[bh, t, t], &s, DType::F32).unwrap();
                let pt = Tensor::empty(g, &[bh, t, t], dt).unwrap();
                poison(&pt);
                let scale = default_scale(d);
                g.run(&[&softmax_forward(g, &st, scale, &pt).unwrap()])
                    .unwrap();
                let p = read(&pt);
                let y = prod(&p, &v, false, false, t, d, t);
                let (y_ref, _) = attention_ref(&q64, &k64, &v64, bh, t, d);
                assert_close("y", &y, &y_ref, tol(dt));

                let dp = prod(&dy, &v, false, true, t, t, d);
                let dpt = Tensor::from_f32(g, &[bh, t, t], &dp, DType::F32).unwrap();
                let dst = Tensor::empty(g, &[bh, t, t], dt).unwrap();
                poison(&dst);
                let flag = OverflowFlag::new(g).unwrap();
                g.run(&[&softmax_backward(g, &pt, &dpt, scale, &dst, &flag).unwrap()])
                    .unwrap();
                let ds = read(&dst);
                let dq = prod(&ds, &k, false, false, t, d, t);
                let dk = prod(&ds, &q, true, false, t, d, t);
                let dv = prod(&p, &dy, true, false, t, d, t);
                let (dq_ref, dk_ref, dv_ref) =
                    attention_back_ref(&q64, &k64, &v64, &dy64, bh, t, d);
                // The score gradient cancels (dp - rowsum) in f32 on 16-bit-rounded p: allow
                // twice the dtype tolerance for dq and dk.
                assert_close("dq", &dq, &dq_ref, 2.0 * tol(dt));
                assert_close("dk", &dk, &dk_ref, 2.0 * tol(dt));
                assert_close("dv", &dv, &dv_ref, tol(dt));
            }
        }
    }
}
