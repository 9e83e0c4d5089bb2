//! Column sums (bias gradients) and LayerNorm's parameter gradients against f64 CPU
//! references on odd sizes past `reduce::ONE_PASS_MAX_ROWS`, where they run in two passes
//! (partial sums of row chunks, then their sum): every input dtype (both f16 paths),
//! accumulate on and off, outputs and partial sums poisoned; and the same bits on every
//! run.

mod common;

use common::{gpu, gpus_for_f16, random_vec, rel_err, rng, rounded, submit, TOL_F32};
use halfgrad::amp::OverflowFlag;
use halfgrad::ops::layernorm::{self, Stats};
use halfgrad::ops::reduce::{self, partial_sums_shape, ONE_PASS_MAX_ROWS};
use halfgrad::{DType, Gpu, Tensor};

/// (rows, cols): past the one-pass limit, a last chunk cut short, columns past one and two
/// pass-1 workgroups (64 columns); and the last one-pass size.
const SIZES: [(usize, usize); 3] = [(4099, 37), (2500, 129), (ONE_PASS_MAX_ROWS, 5)];

/// Every input dtype with the devices it is tested on (both f16 paths).
fn dtypes() -> Vec<(DType, &'static str, &'static Gpu)> {
    let mut v = vec![
        (DType::F32, "default", gpu()),
        (DType::BF16, "default", gpu()),
    ];
    v.extend(gpus_for_f16().into_iter().map(|(p, g)| (DType::F16, p, g)));
    v
}

fn nan(g: &Gpu, shape: &[usize]) -> Tensor {
    Tensor::full(g, shape, DType::F32, f32::NAN).unwrap()
}

fn read(t: &Tensor) -> Vec<f32> {
    t.to_f32_vec().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

/// The f32 partial-sum buffers a (rows, cols) reduction needs, poisoned.
fn partials(g: &Gpu, rows: usize, cols: usize, count: usize) -> Vec<Tensor> {
    let shape = partial_sums_shape(rows, cols);
    assert_eq!(shape.is_some(), rows > ONE_PASS_MAX_ROWS);
    shape.map_or(Vec::new(), |s| (0..count).map(|_| nan(g, &s)).collect())
}

/// sum over rows of x[r, c] (+ start[c]).
fn col_sum_ref(x: &[f32], rows: usize, cols: usize, start: Option<&[f32]>) -> Vec<f64> {
    let mut out: Vec<f64> = match start {
        Some(s) => s.iter().map(|&v| v as f64).collect(),
        None => vec![0.0; cols],
    };
    for r in 0..rows {
        for (c, o) in out.iter_mut().enumerate() {
            *o += x[r * cols + c] as f64;
        }
    }
    out
}

#[test]
fn column_sums_of_tall_matrices_match_f64() {
    for (dtype, path, g) in dtypes() {
        for (i, &(rows, cols)) in SIZES.iter().enumerate() {
            for accumulate in [false, true] {
                println!("col_sum {dtype} {path} {rows}x{cols} accumulate={accumulate}");
                let mut r = rng(700 + i as u64);
                let x_host = rounded(&random_vec(&mut r, rows * cols, 1.0), dtype);
                let x = Tensor::from_f32(g, &[rows, cols], &x_host, dtype).unwrap();
                let start_host = random_vec(&mut r, cols, 10.0);
                let out = match accumulate {
                    true => Tensor::from_f32(g, &[cols], &start_host, DType::F32).unwrap(),
                    false => nan(g, &[cols]),
                };
                let partial = partials(g, rows, cols, 1);
                let ds = reduce::col_sum(g, &x, &out, partial.first(), accumulate).unwrap();
                assert_eq!(ds.len(), if partial.is_empty() { 1 } else { 2 });
                submit(g, |p| ds.iter().for_each(|d| d.encode(p)));
                let start = accumulate.then_some(start_host.as_slice());
                let want = col_sum_ref(&x_host, rows, cols, start);
                // Exactly representable inputs: only f32 summation error.
                assert_close("col_sum", &read(&out), &want, TOL_F32);
            }
        }
    }
}

/// dgamma[c] = sum over rows of dy * (x - mean) * rstd, dbeta[c] = sum of dy (+ starts).
fn ln_params_ref(
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    rstd: &[f32],
    cols: usize,
    start: Option<(&[f32], &[f32])>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut dg, mut db) = match start {
        Some((g, b)) => (
            g.iter().map(|&v| v as f64).collect(),
            b.iter().map(|&v| v as f64).collect(),
        ),
        None => (vec![0.0; cols], vec![0.0; cols]),
    };
    for r in 0..mean.len() {
        for c in 0..cols {
            let i = r * cols + c;
            let xhat = (x[i] as f64 - mean[r] as f64) * rstd[r] as f64;
            dg[c] += dy[i] as f64 * xhat;
            db[c] += dy[i] as f64;
        }
    }
    (dg, db)
}

#[test]
fn layernorm_parameter_gradients_of_tall_inputs_match_f64() {
    for (dtype, path, g) in dtypes() {
        let flag = OverflowFlag::new(g).unwrap();
        for (i, &(rows, cols)) in SIZES.iter().enumerate() {
            for accumulate in [false, true] {
                println!("layernorm params {dtype} {path} {rows}x{cols} accumulate={accumulate}");
                let mut r = rng(800 + i as u64);
                let x_host = rounded(&random_vec(&mut r, rows * cols, 2.0), dtype);
                let dy_host = rounded(&random_vec(&mut r, rows * cols, 1.0), dtype);
                // Any f32 statistics will do: the kernels read them as given.
                let mean_host = random_vec(&mut r, rows, 0.5);
                let rstd_host: Vec<f32> = random_vec(&mut r, rows, 0.5)
                    .iter()
                    .map(|v| v + 1.0)
                    .collect();
                let gamma_host = random_vec(&mut r, cols, 1.0);
                let (g_start, b_start) =
                    (random_vec(&mut r, cols, 5.0), random_vec(&mut r, cols, 5.0));
                let t = |shape: &[usize], v: &[f32], dt| Tensor::from_f32(g, shape, v, dt).unwrap();
                let x = t(&[rows, cols], &x_host, dtype);
                let dy = t(&[rows, cols], &dy_host, dtype);
                let (mean, rstd) = (
                    t(&[rows], &mean_host, DType::F32),
                    t(&[rows], &rstd_host, DType::F32),
                );
                let gamma = t(&[cols], &gamma_host, DType::F32);
                let (dgamma, dbeta) = match accumulate {
                    true => (
                        t(&[cols], &g_start, DType::F32),
                        t(&[cols], &b_start, DType::F32),
                    ),
                    false => (nan(g, &[cols]), nan(g, &[cols])),
                };
                let row_terms = nan(g, &[rows, 2]);
                let partial = partials(g, rows, cols, 2);
                let ds = layernorm::backward(
                    g,
                    &x,
                    &dy,
                    &gamma,
                    Stats {
                        mean: &mean,
                        rstd: &rstd,
                    },
                    &row_terms,
                    None,
                    match partial.as_slice() {
                        [pg, pb] => Some([pg, pb]),
                        _ => None,
                    },
                    &dgamma,
                    &dbeta,
                    accumulate,
                    &flag,
                )
                .unwrap();
                assert_eq!(ds.len(), if partial.is_empty() { 1 } else { 3 });
                submit(g, |p| ds.iter().for_each(|d| d.encode(p)));
                let start = accumulate.then_some((g_start.as_slice(), b_start.as_slice()));
                let (want_g, want_b) =
                    ln_params_ref(&x_host, &dy_host, &mean_host, &rstd_host, cols, start);
                assert_close("dgamma", &read(&dgamma), &want_g, 10.0 * TOL_F32);
                assert_close("dbeta", &read(&dbeta), &want_b, TOL_F32);
            }
        }
    }
}

#[test]
fn two_pass_sums_give_the_same_bits_on_every_run() {
    let g = gpu();
    let (rows, cols) = (4099, 37);
    let x_host = random_vec(&mut rng(900), rows * cols, 1.0);
    let x = Tensor::from_f32(g, &[rows, cols], &x_host, DType::F16).unwrap();
    let partial = partials(g, rows, cols, 1);
    let bits = || {
        let out = nan(g, &[cols]);
        let ds = reduce::col_sum(g, &x, &out, partial.first(), false).unwrap();
        submit(g, |p| ds.iter().for_each(|d| d.encode(p)));
        read(&out).iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let first = bits();
    for _ in 0..3 {
        assert_eq!(bits(), first);
    }
}

#[test]
fn layernorm_partial_sums_must_fit_the_rows_and_be_two_buffers() {
    let g = gpu();
    let flag = OverflowFlag::new(g).unwrap();
    let (rows, cols) = (ONE_PASS_MAX_ROWS + 1, 3);
    let t = |shape: &[usize]| nan(g, shape);
    let (x, mean, gamma) = (t(&[rows, cols]), t(&[rows]), t(&[cols]));
    let (row_terms, dgamma, dbeta) = (t(&[rows, 2]), t(&[cols]), t(&[cols]));
    let shape = partial_sums_shape(rows, cols).unwrap();
    let (pg, pb, short) = (t(&shape), t(&shape), t(&[1, cols]));
    let run = |partials: Option<[&Tensor; 2]>| {
        let stats = Stats {
            mean: &mean,
            rstd: &mean,
        };
        let ds = layernorm::backward(
            g, &x, &x, &gamma, stats, &row_terms, None, partials, &dgamma, &dbeta, false, &flag,
        );
        ds.map(|d| d.len())
    };
    assert_eq!(run(Some([&pg, &pb])).unwrap(), 3);
    for bad in [None, Some([&pg, &pg]), Some([&pg, &short])] {
        let e = run(bad).unwrap_err();
        assert!(matches!(e, halfgrad::Error::InvalidArgument(_)), "{e:?}");
    }
}

/// `sum_layers` (a split-K product's K ranges): a few layers of long f32 rows, in layer
/// order, accumulate on and off, output poisoned; bit for bit the sequential f32 sum; and
/// its typed errors.
#[test]
fn sum_layers_match_f64_and_the_sequential_f32_sum() {
    let g = gpu();
    for (i, &(layers, cols)) in [(1usize, 4usize), (2, 4 * 1037), (5, 4 * 263), (16, 8)]
        .iter()
        .enumerate()
    {
        for accumulate in [false, true] {
            let mut r = rng(800 + i as u64);
            let x_host = random_vec(&mut r, layers * cols, 1.0);
            let start_host = random_vec(&mut r, cols, 10.0);
            let x = Tensor::from_f32(g, &[layers, cols], &x_host, DType::F32).unwrap();
            let out = match accumulate {
                true => Tensor::from_f32(g, &[cols], &start_host, DType::F32).unwrap(),
                false => nan(g, &[cols]),
            };
            let d = reduce::sum_layers(g, &x, &out, accumulate).unwrap();
            submit(g, |p| d.encode(p));
            let got = read(&out);
            let start = accumulate.then_some(&start_host[..]);
            let what = format!("sum_layers {layers}x{cols} accumulate={accumulate}");
            assert_close(
                &what,
                &got,
                &col_sum_ref(&x_host, layers, cols, start),
                TOL_F32,
            );
            let sequential: Vec<u32> = (0..cols)
                .map(|c| {
                    let mut s = x_host[c];
                    for l in 1..layers {
                        s += x_host[l * cols + c];
                    }
                    if accumulate {
                        s += start_host[c];
                    }
                    s.to_bits()
                })
                .collect();
            let bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(bits, sequential, "{what}: not the sequential sum");
        }
    }
    let x = Tensor::zeros(g, &[2, 6], DType::F32).unwrap();
    let out = Tensor::zeros(g, &[6], DType::F32).unwrap();
    assert!(matches!(
        reduce::sum_layers(g, &x, &out, false),
        Err(halfgrad::Error::InvalidArgument(_))
    ));
    let x = Tensor::zeros(g, &[2, 8], DType::F16).unwrap();
    let out = Tensor::zeros(g, &[8], DType::F32).unwrap();
    assert!(matches!(
        reduce::sum_layers(g, &x, &out, false),
        Err(halfgrad::Error::DTypeMismatch { .. })
    ));
    let x = Tensor::zeros(g, &[2, 8], DType::F32).unwrap();
    assert!(matches!(
        reduce::sum_layers(
            g,
            &x,
            &out.reshape(&[8]).unwrap().prefix(&[4]).unwrap(),
            false
        ),
        Err(halfgrad::Error::ShapeMismatch { .. })
    ));
}
