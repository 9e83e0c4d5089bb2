//! Matrix products against an f64 CPU reference (lavapipe in CI): every operand dtype,
//! layout and output dtype, ragged shapes, bias, accumulate, both f16 storage paths, the
//! cooperative-matrix kernel where the adapter has it, typed errors, and overflow.

mod common;

use common::{gpu, gpus_for_f16, random_vec, rel_err, rng, rounded, tol, TOL_F16};
use halfgrad::amp::OverflowFlag;
use halfgrad::ops::matmul::{
    chosen_kernel, coop_tile_for, kernel_for_shape, matmul, matmul_tuned, matmul_with, plan_for,
    strided_copied_tile, Causal, CoopEpilogue, CoopTile, CoopTiles, MatmulArgs, MatmulKernel,
    MatmulOptions, MatmulPlan, MatmulTuning, MatrixLayout, TiledTile,
};
use halfgrad::{DType, Error, Gpu, Tensor};

/// (M, N, K): ones, odd sizes, several tiles, K never a multiple of the K slice, odd and
/// even N (odd N makes 16-bit output words straddle rows).
const SHAPES: [(usize, usize, usize); 5] = [
    (1, 1, 1),
    (7, 33, 129),
    (65, 129, 7),
    (33, 34, 65),
    (129, 65, 33),
];

#[derive(Debug, Clone, Copy)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    a: DType,
    b: DType,
    c: DType,
    bias: bool,
    accumulate: bool,
    kernel: MatmulKernel,
    tuning: MatmulTuning,
}

impl Case {
    fn new(
        (m, n, k): (usize, usize, usize),
        (trans_a, trans_b): (bool, bool),
        a: DType,
        b: DType,
        c: DType,
    ) -> Case {
        Case {
            m,
            n,
            k,
            trans_a,
            trans_b,
            a,
            b,
            c,
            bias: false,
            accumulate: false,
            kernel: MatmulKernel::Tiled,
            tuning: MatmulTuning::default(),
        }
    }
}

const LAYOUTS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// Runs one product on fresh random data and returns ||C - ref|| / ||ref||, the
/// reference computed in f64 from the operands as rounded to their dtypes and, for a
/// 16-bit C, rounded to C's dtype.
fn run(g: &Gpu, case: &Case, seed: u64) -> f64 {
    let Case { m, n, k, .. } = *case;
    let mut r = rng(seed);
    let a_vals = rounded(&random_vec(&mut r, m * k, 1.0), case.a);
    let b_vals = rounded(&random_vec(&mut r, k * n, 1.0), case.b);
    let bias_vals = random_vec(&mut r, n, 1.0);
    let c_old = random_vec(&mut r, m * n, 1.0);
    let a_shape = if case.trans_a { [k, m] } else { [m, k] };
    let b_shape = if case.trans_b { [n, k] } else { [k, n] };
    let a = Tensor::from_f32(g, &a_shape, &a_vals, case.a).unwrap();
    let b = Tensor::from_f32(g, &b_shape, &b_vals, case.b).unwrap();
    let bias = Tensor::from_f32(g, &[n], &bias_vals, DType::F32).unwrap();
    let c = if case.accumulate {
        Tensor::from_f32(g, &[m, n], &c_old, case.c).unwrap()
    } else {
        Tensor::full(g, &[m, n], case.c, f32::NAN).unwrap()
    };
    let opts = MatmulOptions {
        trans_a: case.trans_a,
        trans_b: case.trans_b,
        accumulate: case.accumulate,
        kernel: case.kernel,
    };
    let d = matmul_tuned(
        g,
        &a,
        &b,
        &c,
        case.bias.then_some(&bias),
        None,
        &opts,
        &case.tuning,
    )
    .unwrap_or_else(|e| panic!("{case:?}: {e}"));
    g.run_all(&d).unwrap();
    let out = c.to_f32_vec().unwrap();

    let a_at = |i: usize, p: usize| {
        f64::from(if case.trans_a {
            a_vals[p * m + i]
        } else {
            a_vals[i * k + p]
        })
    };
    let b_at = |p: usize, j: usize| {
        f64::from(if case.trans_b {
            b_vals[j * k + p]
        } else {
            b_vals[p * n + j]
        })
    };
    let mut reference = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s: f64 = (0..k).map(|p| a_at(i, p) * b_at(p, j)).sum();
            if case.bias {
                s += f64::from(bias_vals[j]);
            }
            if case.accumulate {
                s += f64::from(c_old[i * n + j]);
            }
            reference[i * n + j] = if case.c == DType::F32 {
                s
            } else {
                f64::from(case.c.round(s as f32))
            };
        }
    }
    rel_err(&out, &reference)
}

fn check(g: &Gpu, case: &Case, seed: u64) {
    let err = run(g, case, seed);
    let limit = tol(case.a).max(tol(case.b)).max(tol(case.c));
    assert!(
        err <= limit,
        "{case:?}: relative error {err:.3e} > {limit:.1e}"
    );
}

#[test]
fn tiled_every_dtype_layout_and_output_matches_f64_reference() {
    let g = gpu();
    let mut runs = 0;
    for (s, &shape) in SHAPES.iter().enumerate() {
        for a in DType::ALL {
            for b in DType::ALL {
                for layout in LAYOUTS {
                    for c in DType::ALL {
                        let case = Case::new(shape, layout, a, b, c);
                        check(g, &case, 1000 * s as u64 + runs);
                        runs += 1;
                    }
                }
            }
        }
    }
    println!("{runs} products checked");
}

#[test]
fn packed_and_native_f16_paths_match_reference() {
    for (path, g) in gpus_for_f16() {
        println!("path {path}");
        for &shape in &[(7, 33, 129), (33, 34, 65)] {
            for (a, b) in [
                (DType::F16, DType::F16),
                (DType::F16, DType::F32),
                (DType::BF16, DType::F16),
            ] {
                for layout in LAYOUTS {
                    for c in [DType::F32, DType::F16, DType::BF16] {
                        check(g, &Case::new(shape, layout, a, b, c), 7);
                    }
                }
            }
        }
    }
}

#[test]
fn large_tiles_match_reference() {
    let g = gpu();
    for &shape in &[(129, 130, 33), (257, 255, 17), (3, 200, 9)] {
        for dt in DType::ALL {
            for layout in LAYOUTS {
                for c in [DType::F32, DType::F16] {
                    let case = Case {
                        tuning: MatmulTuning {
                            tiled: TiledTile::Large,
                            ..MatmulTuning::default()
                        },
                        ..Case::new(shape, layout, dt, dt, c)
                    };
                    check(g, &case, 11);
                }
            }
        }
    }
}

/// The tiled_fast kernel's tuning (K slices of 8, or 16 with `TiledTile::Fast16`).
fn fast(tile: TiledTile) -> MatmulTuning {
    MatmulTuning {
        tiled: tile,
        ..MatmulTuning::default()
    }
}

/// Even N, odd M and K, one to two tiles each way (K slices ragged, M past 128, N = 8).
const FAST_SHAPES: [(usize, usize, usize); 3] = [(37, 66, 45), (129, 130, 7), (200, 8, 300)];

#[test]
fn fast_tiles_match_reference() {
    for (path, g) in gpus_for_f16() {
        println!("path {path}");
        // Native f16 reads; the other dtypes do not depend on the path.
        let dtypes: &[DType] = if path == "packed" {
            &DType::ALL
        } else {
            &[DType::F16]
        };
        // Output dtypes cycle over shapes and layouts (lavapipe is slow).
        let mut runs = 0;
        for (s, &shape) in FAST_SHAPES.iter().enumerate() {
            for &dt in dtypes {
                for (l, layout) in LAYOUTS.into_iter().enumerate() {
                    let c = DType::ALL[(s + l) % 3];
                    let case = Case {
                        tuning: fast(TiledTile::Fast),
                        ..Case::new(shape, layout, dt, dt, c)
                    };
                    check(g, &case, 300 + runs);
                    runs += 1;
                }
            }
        }
        // Mixed operands.
        for (a, b) in [
            (DType::F16, DType::BF16),
            (DType::BF16, DType::F32),
            (DType::F32, DType::F16),
        ] {
            for layout in LAYOUTS {
                let case = Case {
                    tuning: fast(TiledTile::Fast),
                    ..Case::new(FAST_SHAPES[0], layout, a, b, DType::F16)
                };
                check(g, &case, 300 + runs);
                runs += 1;
            }
        }
    }
}

#[test]
fn fast_tiles_with_k_slices_of_16_match_reference() {
    let g = gpu();
    for &shape in &FAST_SHAPES[..2] {
        for dt in DType::ALL {
            for layout in LAYOUTS {
                for c in [DType::F32, DType::BF16] {
                    let case = Case {
                        tuning: fast(TiledTile::Fast16),
                        ..Case::new(shape, layout, dt, dt, c)
                    };
                    check(g, &case, 41);
                }
            }
        }
    }
}

#[test]
fn fast_tiles_write_odd_n_into_f32() {
    let g = gpu();
    for &shape in &[(1, 1, 1), (33, 65, 17), (130, 129, 9)] {
        for dt in DType::ALL {
            for layout in LAYOUTS {
                let case = Case {
                    tuning: fast(TiledTile::Fast),
                    ..Case::new(shape, layout, dt, dt, DType::F32)
                };
                check(g, &case, 51);
            }
        }
    }
}

#[test]
fn fast_tiles_bias_and_accumulate_match_reference() {
    let g = gpu();
    for &shape in &[(1, 2, 1), (37, 66, 45), (7, 33, 129)] {
        for layout in LAYOUTS {
            for c in DType::ALL {
                if shape.1 % 2 == 1 && c != DType::F32 {
                    continue;
                }
                let case = Case {
                    bias: true,
                    tuning: fast(TiledTile::Fast),
                    ..Case::new(shape, layout, DType::F16, DType::F16, c)
                };
                check(g, &case, 61);
            }
            for bias in [false, true] {
                let case = Case {
                    bias,
                    accumulate: true,
                    tuning: fast(TiledTile::Fast),
                    ..Case::new(shape, layout, DType::BF16, DType::F32, DType::F32)
                };
                check(g, &case, 62);
            }
        }
    }
}

#[test]
fn fast_tiles_refuse_odd_n_into_16_bit_c() {
    let g = gpu();
    let t = |shape: &[usize], dt| Tensor::zeros(g, shape, dt).unwrap();
    let opts = MatmulOptions {
        kernel: MatmulKernel::Tiled,
        ..MatmulOptions::default()
    };
    let (a, b) = (t(&[4, 3], DType::F16), t(&[3, 5], DType::F16));
    for tile in [TiledTile::Fast, TiledTile::Fast16] {
        for c_dt in [DType::F16, DType::BF16] {
            let c = t(&[4, 5], c_dt);
            let r = matmul_tuned(g, &a, &b, &c, None, None, &opts, &fast(tile));
            assert!(
                matches!(r, Err(Error::InvalidArgument(_))),
                "{tile:?} {c_dt}"
            );
        }
        // An f32 C of odd N and a 16-bit C of even N are fine, and take tiled_fast.
        let c = t(&[4, 5], DType::F32);
        matmul_tuned(g, &a, &b, &c, None, None, &opts, &fast(tile)).unwrap();
        let (b6, c6) = (t(&[3, 6], DType::F16), t(&[4, 6], DType::F16));
        let args = halfgrad::ops::matmul::MatmulArgs {
            opts,
            tuning: fast(tile),
            ..halfgrad::ops::matmul::MatmulArgs::new(&a, &b6, &c6, (4, 6, 3))
        };
        let plan = halfgrad::ops::matmul::plan_for(g, &args).unwrap();
        assert_eq!(plan.name(), "tiled_fast");
    }
}

#[test]
fn bias_and_accumulate_match_reference() {
    let g = gpu();
    for &shape in &[(1, 1, 1), (7, 33, 129), (33, 34, 65), (65, 129, 7)] {
        for layout in LAYOUTS {
            for c in DType::ALL {
                let case = Case {
                    bias: true,
                    ..Case::new(shape, layout, DType::F16, DType::F16, c)
                };
                check(g, &case, 21);
            }
            for bias in [false, true] {
                let case = Case {
                    bias,
                    accumulate: true,
                    ..Case::new(shape, layout, DType::BF16, DType::F32, DType::F32)
                };
                check(g, &case, 22);
            }
        }
    }
}

#[test]
fn coop_kernel_matches_reference() {
    let g = gpu();
    if g.caps().cooperative_matrix.is_none() {
        eprintln!(
            "skipping the cooperative-matrix kernel: adapter {} has no cooperative matrices",
            g.adapter().name
        );
        return;
    }
    let shapes = [
        (1, 1, 1),
        (7, 33, 129),
        (65, 129, 7),
        (33, 34, 65),
        (129, 65, 33),
        (128, 128, 64),  // every tile direct (fragments straight from A and B)
        (200, 256, 72),  // direct interior, staged edge tiles and K remainder
        (200, 257, 300), // odd N: staged, with the straddle columns
    ];
    for (s, &shape) in shapes.iter().enumerate() {
        for layout in LAYOUTS {
            for c in DType::ALL {
                let case = Case {
                    kernel: MatmulKernel::Coop,
                    ..Case::new(shape, layout, DType::F16, DType::F16, c)
                };
                check(g, &case, 40 + s as u64);
            }
            let case = Case {
                kernel: MatmulKernel::Coop,
                bias: true,
                accumulate: true,
                ..Case::new(shape, layout, DType::F16, DType::F16, DType::F32)
            };
            check(g, &case, 50 + s as u64);
        }
    }
}

#[test]
fn coop_workgroup_shapes_match_reference() {
    let g = gpu();
    if g.caps().cooperative_matrix.is_none() {
        eprintln!(
            "skipping the cooperative-matrix kernel: adapter {} has no cooperative matrices",
            g.adapter().name
        );
        return;
    }
    for coop_subgroups in [(1, 1), (2, 1), (1, 2), (4, 1), (1, 4)] {
        for &shape in &[(200, 256, 72), (129, 65, 33)] {
            for layout in LAYOUTS {
                for c in [DType::F32, DType::F16] {
                    let case = Case {
                        kernel: MatmulKernel::Coop,
                        tuning: MatmulTuning {
                            coop_subgroups,
                            ..MatmulTuning::default()
                        },
                        ..Case::new(shape, layout, DType::F16, DType::F16, c)
                    };
                    check(g, &case, 60);
                }
            }
        }
    }
}

/// The coop tile kernel (products that are whole tiles) in every layout, each tile shape,
/// every output dtype, with bias and accumulation.
#[test]
fn coop_tile_kernel_matches_reference() {
    let g = gpu();
    if g.caps().cooperative_matrix.is_none() {
        eprintln!(
            "skipping the cooperative-matrix tile kernel: adapter {} has no cooperative matrices",
            g.adapter().name
        );
        return;
    }
    let tiles = [
        CoopTile::LARGE,
        CoopTile::MEDIUM,
        CoopTile::SMALL,
        CoopTile {
            subgroups: (2, 4),
            frags: (4, 2),
            bk: 32,
        },
        CoopTile {
            subgroups: (2, 2),
            frags: (4, 4),
            bk: 32,
        },
        CoopTile {
            subgroups: (1, 2),
            frags: (2, 2),
            bk: 64,
        },
    ];
    for (s, tile) in tiles.into_iter().enumerate() {
        let (bm, bn) = tile.tile();
        let (bm, bn) = (bm as usize, bn as usize);
        let shape = (2 * bm, 3 * bn, 4 * tile.bk as usize);
        let tuning = MatmulTuning {
            coop_tile: CoopTiles::Fixed(tile),
            ..MatmulTuning::default()
        };
        let used = coop_tile_for(g, shape, &MatmulOptions::default(), &tuning);
        assert_eq!(used, Some(tile), "{tile:?} should run {shape:?}");
        for layout in LAYOUTS {
            for c in DType::ALL {
                let case = Case {
                    kernel: MatmulKernel::Coop,
                    tuning,
                    ..Case::new(shape, layout, DType::F16, DType::F16, c)
                };
                check(g, &case, 70 + s as u64);
            }
            let case = Case {
                kernel: MatmulKernel::Coop,
                tuning,
                bias: true,
                accumulate: true,
                ..Case::new(shape, layout, DType::F16, DType::F16, DType::F32)
            };
            check(g, &case, 80 + s as u64);
        }
    }
}

const EPILOGUES: [CoopEpilogue; 3] = [
    CoopEpilogue::Scratch,
    CoopEpilogue::SubgroupScratch,
    CoopEpilogue::Store,
];

/// Split-K products (f32 C without bias on few output tiles over a long K: the weight
/// gradients' shape): the K ranges into a scratch, then their column sum, every layout,
/// with and without accumulation.
#[test]
fn coop_split_k_products_match_reference() {
    let g = gpu();
    if g.caps().cooperative_matrix.is_none() {
        eprintln!(
            "skipping: adapter {} has no cooperative matrices",
            g.adapter().name
        );
        return;
    }
    let (m, n, k) = (256, 384, 8192);
    let a = Tensor::zeros(g, &[m, k], DType::F16).unwrap();
    let b = Tensor::zeros(g, &[k, n], DType::F16).unwrap();
    let c = Tensor::zeros(g, &[m, n], DType::F32).unwrap();
    let args = halfgrad::ops::matmul::MatmulArgs::new(&a, &b, &c, (m, n, k));
    let split = halfgrad::ops::matmul::split_k_scratch_shape(g, &args).unwrap();
    assert_eq!(
        split,
        Some([16 * m, n]),
        "6 output tiles over K = 8192 split 16 ways"
    );
    for (s, layout) in LAYOUTS.into_iter().enumerate() {
        for accumulate in [false, true] {
            let case = Case {
                kernel: MatmulKernel::Coop,
                accumulate,
                ..Case::new((m, n, k), layout, DType::F16, DType::F16, DType::F32)
            };
            check(g, &case, 150 + s as u64);
        }
    }
}

/// The coop tile kernel's other epilogues (subgroup-barrier scratch, coopStore into an
/// f32 C) and its 128 x 256 / 256 x 128 tiles, every layout and output dtype, with bias
/// and accumulation.
#[test]
fn coop_tile_epilogues_match_reference() {
    let g = gpu();
    if g.caps().cooperative_matrix.is_none() {
        eprintln!(
            "skipping: adapter {} has no cooperative matrices",
            g.adapter().name
        );
        return;
    }
    let tiles = [
        CoopTile::LARGE,
        CoopTile {
            subgroups: (2, 4),
            frags: (4, 4),
            bk: 16,
        },
        CoopTile {
            subgroups: (4, 2),
            frags: (4, 4),
            bk: 16,
        },
    ];
    for (s, tile) in tiles.into_iter().enumerate() {
        let (bm, bn) = tile.tile();
        let shape = (2 * bm as usize, 2 * bn as usize, 3 * tile.bk as usize);
        for epilogue in EPILOGUES {
            let tuning = MatmulTuning {
                coop_tile: CoopTiles::Fixed(tile),
                coop_epilogue: epilogue,
                coop_group_m: s as u32 + 1, // grouped workgroup orders too
                ..MatmulTuning::default()
            };
            let used = coop_tile_for(g, shape, &MatmulOptions::default(), &tuning);
            assert_eq!(used, Some(tile), "{tile:?} should run {shape:?}");
            for layout in LAYOUTS {
                for c in DType::ALL {
                    let case = Case {
                        kernel: MatmulKernel::Coop,
                        tuning,
                        ..Case::new(shape, layout, DType::F16, DType::F16, c)
                    };
                    check(g, &case, 90 + s as u64);
                }
                for bias in [false, true] {
                    let case = Case {
                        kernel: MatmulKernel::Coop,
                        tuning,
                        bias,
                        accumulate: true,
                        ..Case::new(shape, layout, DType::F16, DType::F16, DType::F32)
                    };
                    check(g, &case, 95 + s as u64);
                }
            }
        }
    }
}

/// The direct coop kernel (fragments straight from global memory): several tiles, both
/// K loops, every epilogue, layout and output dtype, bias and accumulation; shapes it
/// cannot take are refused with a typed error.
#[test]
fn coop_direct_kernel_matches_reference() {
    let g = gpu();
    if g.caps().cooperative_matrix.is_none() {
        eprintln!(
            "skipping: adapter {} has no cooperative matrices",
            g.adapter().name
        );
        return;
    }
    let tiles = [
        ((2, 2), (4, 4), 32),
        ((2, 2), (4, 4), 16),
        ((1, 1), (1, 1), 16),
        ((2, 4), (4, 2), 32),
        ((4, 2), (1, 3), 32),
        ((1, 8), (2, 2), 32),
    ];
    for (s, (subgroups, frags, bk)) in tiles.into_iter().enumerate() {
        let tile = CoopTile {
            subgroups,
            frags,
            bk,
        };
        let (bm, bn) = tile.tile();
        let shape = (2 * bm as usize, 3 * bn as usize, 48);
        for epilogue in EPILOGUES {
            let tuning = MatmulTuning {
                coop_tile: CoopTiles::Direct(tile),
                coop_epilogue: epilogue,
                coop_group_m: s as u32 % 3 + 1, // grouped workgroup orders too
                ..MatmulTuning::default()
            };
            for layout in LAYOUTS {
                for c in DType::ALL {
                    let case = Case {
                        kernel: MatmulKernel::Coop,
                        tuning,
                        ..Case::new(shape, layout, DType::F16, DType::F16, c)
                    };
                    check(g, &case, 100 + s as u64);
                }
                for bias in [false, true] {
                    let case = Case {
                        kernel: MatmulKernel::Coop,
                        tuning,
                        bias,
                        accumulate: true,
                        ..Case::new(shape, layout, DType::F16, DType::F16, DType::F32)
                    };
                    check(g, &case, 110 + s as u64);
                }
            }
        }
    }
    // Not whole tiles, K not a multiple of 16, an invalid tile: typed errors.
    let direct = |subgroups, frags, bk| MatmulTuning {
        coop_tile: CoopTiles::Direct(CoopTile {
            subgroups,
            frags,
            bk,
        }),
        ..MatmulTuning::default()
    };
    let opts = MatmulOptions {
        kernel: MatmulKernel::Coop,
        ..MatmulOptions::default()
    };
    for (shape, tuning) in [
        ((128, 100, 64), direct((2, 2), (2, 2), 16)),
        ((128, 128, 40), direct((2, 2), (2, 2), 16)),
        ((128, 128, 64), direct((2, 2), (5, 1), 16)),
        ((128, 128, 64), direct((4, 4), (1, 1), 16)),
        ((128, 128, 64), direct((2, 2), (2, 2), 64)),
    ] {
        let (m, n, k) = shape;
        let a = Tensor::zeros(g, &[m, k], DType::F16).unwrap();
        let b = Tensor::zeros(g, &[k, n], DType::F16).unwrap();
        let c = Tensor::zeros(g, &[m, n], DType::F32).unwrap();
        let got = matmul_tuned(g, &a, &b, &c, None, None, &opts, &tuning);
        assert!(
            matches!(got, Err(Error::InvalidArgument(_))),
            "{shape:?} {tuning:?}: {:?}",
            got.err()
        );
    }
}

/// The fragment-copy coop kernel (slices staged by coopLoad / coopStore): several tiles
/// and K slices, every epilogue, layout and output dtype, bias and accumulation; shapes
/// it cannot take are refused with a typed error.
#[test]
fn coop_copied_kernel_matches_reference() {
    let g = gpu();
    if g.caps().cooperative_matrix.is_none() {
        eprintln!(
            "skipping: adapter {} has no cooperative matrices",
            g.adapter().name
        );
        return;
    }
    let tiles = [
        ((2, 4), (4, 2), 16),
        ((2, 4), (4, 2), 32),
        ((2, 2), (4, 4), 32),
        ((2, 2), (2, 2), 64),
        ((1, 1), (1, 1), 16),
        ((4, 2), (2, 4), 16),
    ];
    for (s, (subgroups, frags, bk)) in tiles.into_iter().enumerate() {
        let tile = CoopTile {
            subgroups,
            frags,
            bk,
        };
        let (bm, bn) = tile.tile();
        let shape = (2 * bm as usize, 3 * bn as usize, 3 * bk as usize);
        for epilogue in EPILOGUES {
            let tuning = MatmulTuning {
                coop_tile: CoopTiles::Copied(tile),
                coop_epilogue: epilogue,
                coop_group_m: s as u32 % 3 + 1, // grouped workgroup orders too
                ..MatmulTuning::default()
            };
            for layout in LAYOUTS {
                for c in DType::ALL {
                    let case = Case {
                        kernel: MatmulKernel::Coop,
                        tuning,
                        ..Case::new(shape, layout, DType::F16, DType::F16, c)
                    };
                    check(g, &case, 120 + s as u64);
                }
                for bias in [false, true] {
                    let case = Case {
                        kernel: MatmulKernel::Coop,
                        tuning,
                        bias,
                        accumulate: true,
                        ..Case::new(shape, layout, DType::F16, DType::F16, DType::F32)
                    };
                    check(g, &case, 130 + s as u64);
                }
            }
        }
    }
    // Not whole tiles, K not a multiple of 16, an invalid tile: typed errors.
    let direct = |subgroups, frags, bk| MatmulTuning {
        coop_tile: CoopTiles::Copied(CoopTile {
            subgroups,
            frags,
            bk,
        }),
        ..MatmulTuning::default()
    };
    let opts = MatmulOptions {
        kernel: MatmulKernel::Coop,
        ..MatmulOptions::default()
    };
    for (shape, tuning) in [
        ((128, 100, 64), direct((2, 2), (2, 2), 16)),
        ((128, 128, 48), direct((2, 2), (2, 2), 32)),
        ((128, 128, 64), direct((2, 2), (5, 1), 16)),
        ((128, 128, 64), direct((1, 1), (1, 1), 128)),
        ((256, 256, 64), direct((2, 4), (1, 1), 16)),
    ] {
        let (m, n, k) = shape;
        let a = Tensor::zeros(g, &[m, k], DType::F16).unwrap();
        let b = Tensor::zeros(g, &[k, n], DType::F16).unwrap();
        let c = Tensor::zeros(g, &[m, n], DType::F32).unwrap();
        let got = matmul_tuned(g, &a, &b, &c, None, None, &opts, &tuning);
        assert!(
            matches!(got, Err(Error::InvalidArgument(_))),
            "{shape:?} {tuning:?}: {:?}",
            got.err()
        );
    }
}

/// One operand of a batched, strided product: its tensor's dtype and length and where its
/// matrices lie in it.
#[derive(Debug, Clone, Copy)]
struct View {
    dtype: DType,
    layout: MatrixLayout,
    len: usize,
}

impl View {
    /// Element index of stored (r, c) of batch (o, i), for matrices of `cols` columns.
    fn at(&self, (o, i): (usize, usize), r: usize, c: usize, cols: usize) -> usize {
        let l = &self.layout;
        let ld = if l.ld == 0 { cols } else { l.ld };
        l.offset + o * l.outer_stride + i * l.inner_stride + r * ld + c
    }
}

/// A batched, strided product C[o, i] = op(A[o, i]) @ op(B[o, i]) (+ old C).
#[derive(Debug, Clone, Copy)]
struct Strided {
    what: &'static str,
    mnk: (usize, usize, usize),
    batch: (usize, usize),
    trans: (bool, bool),
    a: View,
    b: View,
    c: View,
    /// A and B are one tensor (a's), as Q and K in a fused QKV activation.
    same_ab: bool,
    accumulate: bool,
}

/// Attention's six per-head products over a batch of `bsz` sequences of `t` tokens and
/// `heads` heads of width `hd` (src/nn/gpt/attention.rs): Q, K and V are column blocks of
/// a fused (B*T, 3C) activation, y and dY (B*T, C) with head h at column h*hd, P, dS and
/// the scores dense (B, H, T, T); C of dtype `out` (dV, dQ, dK into dqkv's column blocks).
fn attention_products(
    (bsz, heads, t, hd): (usize, usize, usize, usize),
    out: DType,
) -> Vec<Strided> {
    let c = heads * hd;
    let f16 = DType::F16;
    let qkv = |dtype, part: usize| View {
        dtype,
        layout: MatrixLayout {
            offset: part * c,
            ld: 3 * c,
            outer_stride: t * 3 * c,
            inner_stride: hd,
        },
        len: bsz * t * 3 * c,
    };
    let heads_of = |dtype| View {
        dtype,
        layout: MatrixLayout {
            offset: 0,
            ld: c,
            outer_stride: t * c,
            inner_stride: hd,
        },
        len: bsz * t * c,
    };
    let square = |dtype| View {
        dtype,
        layout: MatrixLayout::dense_batch(t, t, heads),
        len: bsz * heads * t * t,
    };
    let product = |what, mnk, trans, a, b, c, same_ab| Strided {
        what,
        mnk,
        batch: (bsz, heads),
        trans,
        a,
        b,
        c,
        same_ab,
        accumulate: false,
    };
    vec![
        product(
            "S = Q K^T",
            (t, t, hd),
            (false, true),
            qkv(f16, 0),
            qkv(f16, 1),
            square(out),
            true,
        ),
        product(
            "Y = P V",
            (t, hd, t),
            (false, false),
            square(f16),
            qkv(f16, 2),
            heads_of(out),
            false,
        ),
        product(
            "dV = P^T dY",
            (t, hd, t),
            (true, false),
            square(f16),
            heads_of(f16),
            qkv(out, 2),
            false,
        ),
        product(
            "dP = dY V^T",
            (t, t, hd),
            (false, true),
            heads_of(f16),
            qkv(f16, 2),
            square(out),
            false,
        ),
        product(
            "dQ = dS K",
            (t, hd, t),
            (false, false),
            square(f16),
            qkv(f16, 1),
            qkv(out, 0),
            false,
        ),
        product(
            "dK = dS^T Q",
            (t, hd, t),
            (true, false),
            square(f16),
            qkv(f16, 0),
            qkv(out, 1),
            false,
        ),
    ]
}

/// Runs a strided product on random data with C poisoned (NaN, or random old values when
/// accumulating); checks that every element of C outside its views kept its value and
/// returns the plan and ||C - ref|| / ||ref|| over the views (f64 reference, rounded to a
/// 16-bit C's dtype).
fn run_strided(
    g: &Gpu,
    s: &Strided,
    opts: MatmulOptions,
    tuning: MatmulTuning,
    seed: u64,
) -> Result<(MatmulPlan, f64), Error> {
    let (m, n, k) = s.mnk;
    let mut r = rng(seed);
    let a_vals = rounded(&random_vec(&mut r, s.a.len, 1.0), s.a.dtype);
    let b_vals = if s.same_ab {
        a_vals.clone()
    } else {
        rounded(&random_vec(&mut r, s.b.len, 1.0), s.b.dtype)
    };
    let c_old = if s.accumulate {
        random_vec(&mut r, s.c.len, 1.0)
    } else {
        vec![f32::NAN; s.c.len]
    };
    let a = Tensor::from_f32(g, &[s.a.len], &a_vals, s.a.dtype).unwrap();
    let b_own = (!s.same_ab).then(|| Tensor::from_f32(g, &[s.b.len], &b_vals, s.b.dtype).unwrap());
    let b = b_own.as_ref().unwrap_or(&a);
    let c = Tensor::from_f32(g, &[s.c.len], &c_old, s.c.dtype).unwrap();
    let args = MatmulArgs {
        a_layout: s.a.layout,
        b_layout: s.b.layout,
        c_layout: s.c.layout,
        batch: s.batch,
        opts: MatmulOptions {
            trans_a: s.trans.0,
            trans_b: s.trans.1,
            accumulate: s.accumulate,
            ..opts
        },
        tuning,
        ..MatmulArgs::new(&a, b, &c, s.mnk)
    };
    let plan = plan_for(g, &args)?;
    let d = matmul_with(g, &args)?;
    g.run_all(&d).unwrap();
    let out = c.to_f32_vec().unwrap();

    let (a_cols, b_cols) = (if s.trans.0 { m } else { k }, if s.trans.1 { k } else { n });
    let mut inside = vec![false; s.c.len];
    let mut got = Vec::new();
    let mut reference = Vec::new();
    for o in 0..s.batch.0 {
        for i in 0..s.batch.1 {
            for row in 0..m {
                for col in 0..n {
                    let mut sum = 0.0f64;
                    for p in 0..k {
                        let ai = if s.trans.0 {
                            s.a.at((o, i), p, row, a_cols)
                        } else {
                            s.a.at((o, i), row, p, a_cols)
                        };
                        let bi = if s.trans.1 {
                            s.b.at((o, i), col, p, b_cols)
                        } else {
                            s.b.at((o, i), p, col, b_cols)
                        };
                        sum += f64::from(a_vals[ai]) * f64::from(b_vals[bi]);
                    }
                    let ci = s.c.at((o, i), row, col, n);
                    assert!(!inside[ci], "{}: C's views overlap at {ci}", s.what);
                    inside[ci] = true;
                    if s.accumulate {
                        sum += f64::from(s.c.dtype.round(c_old[ci]));
                    }
                    if s.c.dtype != DType::F32 {
                        sum = f64::from(s.c.dtype.round(sum as f32));
                    }
                    got.push(out[ci]);
                    reference.push(sum);
                }
            }
        }
    }
    for (e, (&was, &now)) in c_old.iter().zip(&out).enumerate() {
        if !inside[e] {
            let was = s.c.dtype.round(was);
            assert!(
                was.to_bits() == now.to_bits() || (was.is_nan() && now.is_nan()),
                "{} ({}): element {e} outside C's views changed from {was} to {now}",
                s.what,
                plan.name()
            );
        }
    }
    Ok((plan, rel_err(&got, &reference)))
}

/// Attention's products (batch (2, 3), T = 128, head width 64) with f16 and f32 C, and
/// accumulating into f32, in every operand layout they use: batch (2, 3) of (128 x 128)
/// and (128 x 64) outputs, A and B from one fused QKV tensor. Where the adapter has
/// cooperative matrices: `Auto` must plan the fragment-copy kernel (the 128 x 128 tile for
/// the (T, T) outputs, 128 x 64 for the (T, hd) ones; the store epilogue into f32), and
/// forced fragment-copy tiles and epilogues must match too. Elsewhere (lavapipe) the same
/// products run on the tiled kernel, which checks the harness and the layouts.
#[test]
fn coop_copied_attention_products_match_reference() {
    let g = gpu();
    let coop = g.caps().cooperative_matrix.is_some();
    let env_set = |name| std::env::var(name).is_ok_and(|v: String| !v.is_empty());
    let check_auto_plan = coop && !env_set("HALFGRAD_MATMUL") && !env_set("HALFGRAD_COOP");
    let tile = |subgroups, frags, bk| CoopTile {
        subgroups,
        frags,
        bk,
    };
    let copied = |t, epilogue, group_m| MatmulTuning {
        coop_tile: CoopTiles::Copied(t),
        coop_epilogue: epilogue,
        coop_group_m: group_m,
        ..MatmulTuning::default()
    };
    // (kernel, tuning): Auto first, then forced tiles that divide every product.
    let mut runs = vec![(MatmulKernel::Auto, MatmulTuning::default())];
    if coop {
        runs.extend([
            (
                MatmulKernel::Coop,
                copied(tile((2, 2), (2, 2), 32), CoopEpilogue::Scratch, 1),
            ),
            (
                MatmulKernel::Coop,
                copied(tile((1, 1), (4, 4), 16), CoopEpilogue::SubgroupScratch, 2),
            ),
            (
                MatmulKernel::Coop,
                copied(tile((2, 2), (2, 2), 64), CoopEpilogue::Store, 3),
            ),
            (
                MatmulKernel::Coop,
                copied(tile((2, 2), (4, 2), 16), CoopEpilogue::Store, 1),
            ),
        ]);
    } else {
        eprintln!(
            "adapter {} has no cooperative matrices: attention's products on the tiled kernel",
            g.adapter().name
        );
        runs[0].0 = MatmulKernel::Tiled;
    }
    let dims = (2, 3, 128, 64);
    let mut seed = 300;
    for (r, &(kernel, tuning)) in runs.iter().enumerate() {
        let opts = MatmulOptions {
            kernel,
            ..MatmulOptions::default()
        };
        for out in [DType::F16, DType::F32] {
            for mut s in attention_products(dims, out) {
                for accumulate in if out == DType::F32 {
                    vec![false, true]
                } else {
                    vec![false]
                } {
                    // The forced 128 x 64 tile does not divide the (T, T) outputs.
                    if r == 4 && s.mnk.1 != 64 {
                        continue;
                    }
                    s.accumulate = accumulate;
                    seed += 1;
                    let (plan, err) = run_strided(g, &s, opts, tuning, seed).unwrap_or_else(|e| {
                        panic!("{} {out} acc {accumulate} run {r}: {e}", s.what)
                    });
                    let label = format!(
                        "{} into {out} (accumulate {accumulate}), run {r}, {}",
                        s.what,
                        plan.name()
                    );
                    assert!(
                        err <= TOL_F16,
                        "{label}: relative error {err:.3e} > {TOL_F16:.0e}"
                    );
                    if coop && (r > 0 || check_auto_plan) {
                        let MatmulPlan::CoopCopied(p) = plan else {
                            panic!("{label}: expected the fragment-copy kernel, planned {plan:?}");
                        };
                        if r == 0 {
                            let expected = strided_copied_tile(s.mnk.0, s.mnk.1, s.mnk.2);
                            assert_eq!(Some(p.tile), expected, "{label}");
                            let store = out == DType::F32;
                            assert_eq!(p.epilogue == CoopEpilogue::Store, store, "{label}: {p:?}");
                        }
                    }
                }
            }
        }
    }
}

/// Batched and strided products the fragment-copy kernel refuses (a view whose offset or
/// strides are not multiples of 8 elements) are typed errors when it is forced and run on
/// the general coop kernel under `Auto`; an unbatched product with a strided A still
/// splits K (the split writes a dense C) and matches the reference.
#[test]
fn coop_copied_strided_views_refusals_and_split() {
    let g = gpu();
    if g.caps().cooperative_matrix.is_none() {
        eprintln!(
            "skipping: adapter {} has no cooperative matrices",
            g.adapter().name
        );
        return;
    }
    let f16 = DType::F16;
    let base = attention_products((2, 3, 128, 64), DType::F32);
    // Y = P V with V's columns 4 elements off (ld 3C + 4): fragments not 16-byte aligned.
    let mut s = base[1];
    s.b.layout.ld += 4;
    s.b.layout.outer_stride = 128 * s.b.layout.ld;
    s.b.len = 2 * 128 * s.b.layout.ld;
    let forced = MatmulOptions {
        kernel: MatmulKernel::Coop,
        ..MatmulOptions::default()
    };
    let copied = MatmulTuning {
        coop_tile: CoopTiles::Copied(CoopTile {
            subgroups: (2, 2),
            frags: (2, 2),
            bk: 32,
        }),
        ..MatmulTuning::default()
    };
    let got = run_strided(g, &s, forced, copied, 400);
    assert!(
        matches!(got, Err(Error::InvalidArgument(_))),
        "misaligned V: {:?}",
        got.map(|(p, _)| p)
    );
    let (plan, err) = run_strided(g, &s, forced, MatmulTuning::default(), 401).unwrap();
    assert!(matches!(plan, MatmulPlan::Coop { .. }), "{plan:?}");
    assert!(err <= TOL_F16, "misaligned V on {}: {err:.3e}", plan.name());

    // One (128 x 128) product over K = 2048 with A a strided view (offset 8, rows K + 8
    // apart) into a dense f32 C: whole tiles, the store epilogue, split 4 ways.
    let (m, n, k) = (128, 128, 2048);
    let split = Strided {
        what: "split-K, strided A",
        mnk: (m, n, k),
        batch: (1, 1),
        trans: (false, false),
        a: View {
            dtype: f16,
            layout: MatrixLayout {
                offset: 8,
                ld: k + 8,
                ..MatrixLayout::default()
            },
            len: 8 + m * (k + 8),
        },
        b: View {
            dtype: f16,
            layout: MatrixLayout::default(),
            len: k * n,
        },
        c: View {
            dtype: DType::F32,
            layout: MatrixLayout::default(),
            len: m * n,
        },
        same_ab: false,
        accumulate: false,
    };
    for accumulate in [false, true] {
        let s = Strided {
            accumulate,
            ..split
        };
        let (plan, err) = run_strided(g, &s, forced, MatmulTuning::default(), 410).unwrap();
        assert!(matches!(plan, MatmulPlan::CoopCopied(_)), "{plan:?}");
        assert!(
            err <= TOL_F16,
            "split-K strided A (accumulate {accumulate}): {err:.3e}"
        );
    }
    let a = Tensor::zeros(g, &[split.a.len], f16).unwrap();
    let b = Tensor::zeros(g, &[k * n], f16).unwrap();
    let c = Tensor::zeros(g, &[m * n], DType::F32).unwrap();
    let args = MatmulArgs {
        a_layout: split.a.layout,
        ..MatmulArgs::new(&a, &b, &c, (m, n, k))
    };
    assert_eq!(
        halfgrad::ops::matmul::split_k_scratch_shape(g, &args).unwrap(),
        Some([4 * m, n])
    );
}

/// The hint each of attention's six products carries ([`attention_products`]' order), as
/// src/nn/gpt/attention.rs passes them.
const ATTENTION_HINTS: [Causal; 6] = [
    Causal::SkipAboveDiagonal,
    Causal::LowerA,
    Causal::UpperA,
    Causal::SkipAboveDiagonal,
    Causal::LowerA,
    Causal::UpperA,
];

/// One product run with and without its causal hint on the same data.
struct CausalRun {
    plan: MatmulPlan,
    /// C read back after the hinted and the unhinted run (both poisoned with NaN first).
    hinted: Vec<f32>,
    plain: Vec<f32>,
    /// Every used entry of C, with its f64 reference where its row was sampled.
    used: Vec<UsedEntry>,
}

/// One used entry of a hinted product's C.
#[derive(Debug, Clone, Copy)]
struct UsedEntry {
    /// Element of C.
    ci: usize,
    /// Row of C (within its matrix).
    row: usize,
    /// The f64 reference (rounded to C's dtype) where the row was sampled.
    reference: Option<f64>,
}

/// Runs `s` (no accumulate) on random data, once with `causal` and once without, C
/// poisoned with NaN before each. A square stored A (P, dS) is lower-triangular, as the
/// softmax kernels write it, so `LowerA` / `UpperA` hold. `nan_b_row`: op(B)'s row k of
/// every batch entry is NaN (the unhinted product is NaN in every row then; the hinted
/// one only where its K range reaches k). The f64 reference skips terms whose A value is
/// zero, and covers the rows `sampled` keeps (every row of small products). Checks that
/// the hinted run wrote nothing outside C's views.
fn run_causal(
    g: &Gpu,
    s: &Strided,
    causal: Causal,
    (opts, tuning): (MatmulOptions, MatmulTuning),
    nan_b_row: Option<usize>,
    seed: u64,
) -> Result<CausalRun, Error> {
    let (m, n, k) = s.mnk;
    let (a_cols, b_cols) = (if s.trans.0 { m } else { k }, if s.trans.1 { k } else { n });
    let mut r = rng(seed);
    let mut a_vals = rounded(&random_vec(&mut r, s.a.len, 1.0), s.a.dtype);
    if matches!(causal, Causal::LowerA | Causal::UpperA) && m == k {
        // Stored A is (T, T) either way (op(A) = A or A^T): zero above its diagonal.
        for o in 0..s.batch.0 {
            for i in 0..s.batch.1 {
                for row in 0..m {
                    for col in row + 1..m {
                        a_vals[s.a.at((o, i), row, col, a_cols)] = 0.0;
                    }
                }
            }
        }
    }
    let mut b_vals = if s.same_ab {
        a_vals.clone()
    } else {
        rounded(&random_vec(&mut r, s.b.len, 1.0), s.b.dtype)
    };
    if let Some(kr) = nan_b_row {
        assert!(
            !s.trans.1 && !s.same_ab,
            "{}: NaN rows of a stored-(K, N) B only",
            s.what
        );
        for o in 0..s.batch.0 {
            for i in 0..s.batch.1 {
                for col in 0..n {
                    b_vals[s.b.at((o, i), kr, col, b_cols)] = f32::NAN;
                }
            }
        }
    }
    let a = Tensor::from_f32(g, &[s.a.len], &a_vals, s.a.dtype).unwrap();
    let b_own = (!s.same_ab).then(|| Tensor::from_f32(g, &[s.b.len], &b_vals, s.b.dtype).unwrap());
    let b = b_own.as_ref().unwrap_or(&a);
    let poison = vec![f32::NAN; s.c.len];
    let mut plan = None;
    let mut outs = Vec::new();
    for hint in [causal, Causal::None] {
        let c = Tensor::from_f32(g, &[s.c.len], &poison, s.c.dtype).unwrap();
        let args = MatmulArgs {
            a_layout: s.a.layout,
            b_layout: s.b.layout,
            c_layout: s.c.layout,
            batch: s.batch,
            causal: hint,
            opts: MatmulOptions {
                trans_a: s.trans.0,
                trans_b: s.trans.1,
                accumulate: false,
                ..opts
            },
            tuning,
            ..MatmulArgs::new(&a, b, &c, s.mnk)
        };
        let p = plan_for(g, &args)?;
        assert!(
            plan.is_none_or(|q| q == p),
            "{}: the hint changed the plan",
            s.what
        );
        plan = Some(p);
        g.run_all(&matmul_with(g, &args)?).unwrap();
        outs.push(c.to_f32_vec().unwrap());
    }
    let plain = outs.pop().unwrap();
    let hinted = outs.pop().unwrap();
    let plan = plan.unwrap();

    // Every row of small products; else about 32 rows a matrix plus both edges of every
    // 16-row block (where tiles and K slices start and end).
    let sampled = |row: usize| m <= 256 || row.is_multiple_of(m / 32) || matches!(row % 16, 0 | 15);
    let mut inside = vec![false; s.c.len];
    let mut used = Vec::new();
    for o in 0..s.batch.0 {
        for i in 0..s.batch.1 {
            for row in 0..m {
                for col in 0..n {
                    let ci = s.c.at((o, i), row, col, n);
                    inside[ci] = true;
                    if causal == Causal::SkipAboveDiagonal && col > row {
                        continue;
                    }
                    let reference = sampled(row).then(|| {
                        let mut sum = 0.0f64;
                        for p in 0..k {
                            let ai = if s.trans.0 {
                                s.a.at((o, i), p, row, a_cols)
                            } else {
                                s.a.at((o, i), row, p, a_cols)
                            };
                            let bi = if s.trans.1 {
                                s.b.at((o, i), col, p, b_cols)
                            } else {
                                s.b.at((o, i), p, col, b_cols)
                            };
                            if a_vals[ai] != 0.0 {
                                sum += f64::from(a_vals[ai]) * f64::from(b_vals[bi]);
                            }
                        }
                        if s.c.dtype == DType::F32 {
                            sum
                        } else {
                            f64::from(s.c.dtype.round(sum as f32))
                        }
                    });
                    used.push(UsedEntry { ci, row, reference });
                }
            }
        }
    }
    for (e, &now) in hinted.iter().enumerate() {
        assert!(
            inside[e] || now.is_nan(),
            "{} ({}, {causal:?}): element {e} outside C's views changed to {now}",
            s.what,
            plan.name()
        );
    }
    Ok(CausalRun {
        plan,
        hinted,
        plain,
        used,
    })
}

/// Relative error of `out` against the sampled references of the used entries (those
/// whose row `keep` selects).
fn causal_err(run: &CausalRun, out: &[f32], keep: impl Fn(usize) -> bool) -> f64 {
    let (got, reference): (Vec<f32>, Vec<f64>) = run
        .used
        .iter()
        .filter(|u| keep(u.row))
        .filter_map(|u| Some((out[u.ci], u.reference?)))
        .unzip();
    assert!(!got.is_empty(), "no sampled entries");
    rel_err(&got, &reference)
}

/// Attention's six products with their causal hints on the fragment-copy kernel (device
/// only; skipped without cooperative matrices): the used entries match the f64 reference
/// and the unhinted run bit for bit, for T of 1, 2 and 8 row tiles under `Auto` (128-row
/// tiles), a forced 64 x 64 tile with K slices of 64 (a row tile's shortened K range is
/// an odd number of slices for every other tile) and a forced 32 x 32 tile with K slices
/// of 64 (ranges rounded to slices past the tile's rows); f32 and f16 C. The skip is
/// real: S's top-right tile stays unwritten (NaN) with the hint, and a NaN row of op(B)
/// that the hinted K ranges leave out keeps the tile that skips it finite (and correct)
/// while the unhinted product is NaN there. A hinted product never splits K.
#[test]
fn coop_copied_causal_hints_skip_work_and_keep_bits() {
    let g = gpu();
    if g.caps().cooperative_matrix.is_none() {
        eprintln!(
            "skipping: adapter {} has no cooperative matrices",
            g.adapter().name
        );
        return;
    }
    let forced = |subgroups, frags, bk, epilogue| {
        (
            MatmulKernel::Coop,
            MatmulTuning {
                coop_tile: CoopTiles::Copied(CoopTile {
                    subgroups,
                    frags,
                    bk,
                }),
                coop_epilogue: epilogue,
                ..MatmulTuning::default()
            },
        )
    };
    // (kernel, tuning, row tile, T in row tiles): Auto's (T, T) and (T, 64) tiles are both
    // 128 rows (not under a kernel-choosing environment variable); the 32-row tile's K
    // slices of 64 need T of at least two tiles.
    let env_set = |name| std::env::var(name).is_ok_and(|v: String| !v.is_empty());
    let mut runs = Vec::new();
    if !env_set("HALFGRAD_MATMUL") && !env_set("HALFGRAD_COOP") {
        runs.push((MatmulKernel::Auto, MatmulTuning::default(), 128, [1, 2, 8]));
    }
    let (kernel, tuning) = forced((2, 2), (2, 2), 64, CoopEpilogue::Store);
    runs.push((kernel, tuning, 64, [1, 2, 8]));
    let (kernel, tuning) = forced((2, 2), (1, 1), 64, CoopEpilogue::SubgroupScratch);
    runs.push((kernel, tuning, 32, [2, 4, 8]));
    let mut seed = 700;
    for &(kernel, tuning, rows, tile_counts) in &runs {
        let opts = MatmulOptions {
            kernel,
            ..MatmulOptions::default()
        };
        for tiles in tile_counts {
            let t = rows * tiles;
            // One sequence of two heads of width 64 (8 tiles of 128: T = 1024).
            let dims = (1, 2, t, 64);
            for out in [DType::F32, DType::F16] {
                for (s, &causal) in attention_products(dims, out).iter().zip(&ATTENTION_HINTS) {
                    seed += 1;
                    let label = format!("{} ({causal:?}) T {t} into {out}, {tuning:?}", s.what);
                    let run = run_causal(g, s, causal, (opts, tuning), None, seed)
                        .unwrap_or_else(|e| panic!("{label}: {e}"));
                    let MatmulPlan::CoopCopied(p) = run.plan else {
                        panic!(
                            "{label}: expected the fragment-copy kernel, planned {:?}",
                            run.plan
                        );
                    };
                    assert_eq!(p.tile.tile().0 as usize, rows, "{label}: {p:?}");
                    let err = causal_err(&run, &run.hinted, |_| true);
                    assert!(
                        err <= TOL_F16,
                        "{label}: relative error {err:.3e} > {TOL_F16:.0e}"
                    );
                    for &UsedEntry { ci, .. } in &run.used {
                        assert_eq!(
                            run.hinted[ci].to_bits(),
                            run.plain[ci].to_bits(),
                            "{label}: element {ci} differs from the unhinted product"
                        );
                    }
                    // SkipAboveDiagonal is accepted but not acted on (the kernel computes
                    // those tiles: see causal.rs), so nothing is checked as skipped there.
                }
            }
            // A NaN row of op(B) outside the hinted K range of one row tile: the first
            // (LowerA: k = T - 1) or the last (UpperA: k = 0).
            let bk = match tuning.coop_tile {
                CoopTiles::Copied(tile) => tile.bk as usize,
                _ => 16,
            };
            let products = attention_products(dims, DType::F32);
            for (s, &causal) in products.iter().zip(&ATTENTION_HINTS) {
                let (kr, first_row, reaches) = match causal {
                    Causal::LowerA => (t - 1, 0, rows.div_ceil(bk) * bk > t - 1),
                    Causal::UpperA => (0, t - rows, (t - rows) / bk * bk == 0),
                    _ => continue,
                };
                if reaches {
                    continue;
                }
                seed += 1;
                let label = format!("{} ({causal:?}) T {t}, NaN row {kr} of op(B)", s.what);
                let run = run_causal(g, s, causal, (opts, tuning), Some(kr), seed)
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                let in_tile = |row: usize| (first_row..first_row + rows).contains(&row);
                for u in run.used.iter().filter(|u| in_tile(u.row)) {
                    assert!(
                        run.hinted[u.ci].is_finite(),
                        "{label}: hinted {u:?} not finite"
                    );
                    assert!(run.plain[u.ci].is_nan(), "{label}: unhinted {u:?} not NaN");
                }
                let err = causal_err(&run, &run.hinted, in_tile);
                assert!(err <= TOL_F16, "{label}: relative error {err:.3e}");
            }
        }
    }

    // A product that splits K without a hint runs as one hinted dispatch.
    let (m, k) = (256, 2048);
    let a = Tensor::zeros(g, &[m, k], DType::F16).unwrap();
    let b = Tensor::zeros(g, &[k, m], DType::F16).unwrap();
    let c = Tensor::zeros(g, &[m, m], DType::F32).unwrap();
    let plain = MatmulArgs::new(&a, &b, &c, (m, m, k));
    let hinted = MatmulArgs {
        causal: Causal::SkipAboveDiagonal,
        ..plain
    };
    use halfgrad::ops::matmul::split_k_scratch_shape;
    if !env_set("HALFGRAD_MATMUL") && !env_set("HALFGRAD_COOP") {
        assert!(split_k_scratch_shape(g, &plain).unwrap().is_some());
    }
    assert_eq!(split_k_scratch_shape(g, &hinted).unwrap(), None);
    assert_eq!(matmul_with(g, &hinted).unwrap().len(), 1);
}

/// Kernels other than the fragment-copy one accept the hints and ignore them: on the
/// tiled kernel (both f16 paths) attention's hinted products write every entry of C,
/// bit for bit as without the hint, and the used entries match the f64 reference. A hint
/// on a product that is not square where it needs to be is a typed error.
#[test]
fn causal_hints_are_ignored_by_the_tiled_kernel() {
    let opts = MatmulOptions {
        kernel: MatmulKernel::Tiled,
        ..MatmulOptions::default()
    };
    let tuning = MatmulTuning::default();
    let mut seed = 800;
    for (path, g) in gpus_for_f16() {
        for out in [DType::F32, DType::F16] {
            // T 24 over heads of width 8: several 16-row tiles of the small tiled kernel.
            let products = attention_products((2, 2, 24, 8), out);
            for (s, &causal) in products.iter().zip(&ATTENTION_HINTS) {
                seed += 1;
                let label = format!("{} ({causal:?}) into {out}, {path} f16", s.what);
                let run = run_causal(g, s, causal, (opts, tuning), None, seed)
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                assert!(
                    matches!(run.plan, MatmulPlan::Tiled(_)),
                    "{label}: {:?}",
                    run.plan
                );
                let err = causal_err(&run, &run.hinted, |_| true);
                assert!(err <= TOL_F16, "{label}: relative error {err:.3e}");
                let mut written = 0;
                for (e, (h, p)) in run.hinted.iter().zip(&run.plain).enumerate() {
                    assert_eq!(h.to_bits(), p.to_bits(), "{label}: element {e}");
                    written += usize::from(!h.is_nan());
                }
                assert_eq!(
                    written,
                    2 * 2 * s.mnk.0 * s.mnk.1,
                    "{label}: entries written"
                );
            }
        }
    }

    let g = gpu();
    let products = attention_products((1, 1, 16, 8), DType::F32);
    for (s, causal) in [
        (&products[0], Causal::LowerA),            // S: op(A) is (T, hd)
        (&products[0], Causal::UpperA),            // ditto
        (&products[1], Causal::SkipAboveDiagonal), // Y: C is (T, hd)
    ] {
        let got = run_causal(g, s, causal, (opts, tuning), None, 900);
        assert!(
            matches!(got, Err(Error::InvalidArgument(_))),
            "{} with {causal:?}: {:?}",
            s.what,
            got.map(|r| r.plan)
        );
    }
}

/// GPU-free: the tile `Auto` gives batched or strided whole-tile products, for attention's
/// shapes in GPT-2 small (T 1024) and shakespeare-char (T 256), head width 64.
#[test]
fn strided_auto_tiles_for_attention_shapes() {
    let t = |subgroups, frags| CoopTile {
        subgroups,
        frags,
        bk: 16,
    };
    for seq in [128, 256, 1024] {
        // S = Q K^T and dP = dY V^T: (T, T) outputs over K = 64.
        assert_eq!(strided_copied_tile(seq, seq, 64), Some(t((2, 2), (4, 4))));
        // Y = P V, dV, dQ, dK: (T, 64) outputs over K = T.
        assert_eq!(strided_copied_tile(seq, 64, seq), Some(t((2, 2), (4, 2))));
    }
    assert_eq!(strided_copied_tile(64, 256, 128), Some(t((2, 2), (2, 4))));
    assert_eq!(strided_copied_tile(64, 64, 64), Some(t((2, 2), (2, 2))));
    assert_eq!(strided_copied_tile(96, 64, 64), None);
    assert_eq!(strided_copied_tile(128, 128, 40), None);
}

#[test]
fn kernel_choice_follows_adapter_and_dtypes() {
    if std::env::var("HALFGRAD_MATMUL").is_ok_and(|v| !v.is_empty()) {
        eprintln!("skipping: HALFGRAD_MATMUL is set");
        return;
    }
    let g = gpu();
    let auto = MatmulOptions::default();
    let coop = MatmulOptions {
        kernel: MatmulKernel::Coop,
        ..auto
    };
    let tiled = MatmulOptions {
        kernel: MatmulKernel::Tiled,
        ..auto
    };
    for dt in [DType::F32, DType::BF16] {
        assert_eq!(chosen_kernel(g, dt, dt, &auto).unwrap(), "tiled");
    }
    assert_eq!(
        chosen_kernel(g, DType::F16, DType::F16, &tiled).unwrap(),
        "tiled"
    );
    let for_shape = |shape, opts: &MatmulOptions| {
        kernel_for_shape(g, DType::F16, DType::F16, shape, opts).unwrap()
    };
    if g.caps().cooperative_matrix.is_some() {
        assert_eq!(
            chosen_kernel(g, DType::F16, DType::F16, &auto).unwrap(),
            "coop"
        );
        // Auto keeps the tiled kernel where coop would stage every tile.
        assert_eq!(for_shape((64, 64, 64), &auto), "coop");
        assert_eq!(for_shape((64, 63, 64), &auto), "tiled");
        assert_eq!(for_shape((64, 64, 60), &auto), "tiled");
        assert_eq!(for_shape((64, 63, 64), &coop), "coop");
        assert!(matches!(
            chosen_kernel(g, DType::BF16, DType::F16, &coop),
            Err(Error::DTypeMismatch { .. })
        ));
    } else {
        assert_eq!(
            chosen_kernel(g, DType::F16, DType::F16, &auto).unwrap(),
            "tiled"
        );
        assert!(matches!(
            chosen_kernel(g, DType::F16, DType::F16, &coop),
            Err(Error::MissingFeature { .. })
        ));
        assert_eq!(for_shape((64, 64, 64), &auto), "tiled");
    }
}

#[test]
fn bad_shapes_and_dtypes_are_typed_errors() {
    let g = gpu();
    let t = |shape: &[usize], dt| Tensor::zeros(g, shape, dt).unwrap();
    let opts = MatmulOptions::default();
    let a = t(&[4, 3], DType::F16);
    let b = t(&[3, 5], DType::F16);
    let c = t(&[4, 5], DType::F32);
    let shape_err = |r: halfgrad::Result<_>| matches!(r, Err(Error::ShapeMismatch { .. }));

    // Inner dimensions differ (and transposing the wrong operand makes them differ).
    assert!(shape_err(matmul(
        g,
        &a,
        &t(&[4, 5], DType::F16),
        &c,
        None,
        None,
        &opts
    )));
    let trans_b = MatmulOptions {
        trans_b: true,
        ..opts
    };
    assert!(shape_err(matmul(g, &a, &b, &c, None, None, &trans_b)));
    // C of the wrong shape.
    assert!(shape_err(matmul(
        g,
        &a,
        &b,
        &t(&[5, 4], DType::F32),
        None,
        None,
        &opts
    )));
    // Bias of the wrong length, or not f32.
    let bias4 = t(&[4], DType::F32);
    assert!(shape_err(matmul(g, &a, &b, &c, Some(&bias4), None, &opts)));
    assert!(matches!(
        matmul(g, &a, &b, &c, Some(&t(&[5], DType::F16)), None, &opts),
        Err(Error::DTypeMismatch { .. })
    ));
    // Rank other than 2.
    assert!(shape_err(matmul(
        g,
        &t(&[2, 2, 3], DType::F16),
        &b,
        &c,
        None,
        None,
        &opts
    )));
    assert!(shape_err(matmul(
        g,
        &a,
        &t(&[15], DType::F16),
        &c,
        None,
        None,
        &opts
    )));
    // Accumulating into a 16-bit C.
    let accumulate = MatmulOptions {
        accumulate: true,
        ..opts
    };
    assert!(matches!(
        matmul(g, &a, &b, &t(&[4, 5], DType::F16), None, None, &accumulate),
        Err(Error::DTypeMismatch { .. })
    ));
    // Zero-size operands cannot be made, let alone multiplied.
    assert!(matches!(
        Tensor::zeros(g, &[0, 3], DType::F16),
        Err(Error::Empty { .. })
    ));
    // The good case works.
    matmul(g, &a, &b, &c, None, None, &opts).unwrap();
}

#[test]
fn f16_output_overflow_raises_found_inf() {
    let g = gpu();
    let (m, n, k) = (3, 7, 129);
    let a = Tensor::full(g, &[m, k], DType::F16, 1000.0).unwrap();
    let b = Tensor::full(g, &[k, n], DType::F16, 1.0).unwrap();
    let c = Tensor::full(g, &[m, n], DType::F16, f32::NAN).unwrap();
    let flag = OverflowFlag::new(g).unwrap();
    let d = matmul(g, &a, &b, &c, None, Some(&flag), &MatmulOptions::default()).unwrap();
    g.run_all(&d).unwrap();
    assert!(flag.is_raised_blocking(g).unwrap());
    let out = c.to_f32_vec().unwrap();
    assert!(out.iter().all(|&x| x == f32::INFINITY), "{out:?}");
}

#[test]
fn fast_tiles_f16_output_overflow_raises_found_inf() {
    let g = gpu();
    let (m, n, k) = (3, 8, 129);
    let opts = MatmulOptions {
        kernel: MatmulKernel::Tiled,
        ..MatmulOptions::default()
    };
    let b = Tensor::full(g, &[k, n], DType::F16, 1.0).unwrap();
    // Each output sums 129 products x: 129000 overflows f16, 1.29 does not.
    for (x, raised) in [(1000.0, true), (0.01, false)] {
        let a = Tensor::full(g, &[m, k], DType::F16, x).unwrap();
        let c = Tensor::full(g, &[m, n], DType::F16, f32::NAN).unwrap();
        let flag = OverflowFlag::new(g).unwrap();
        let d = matmul_tuned(
            g,
            &a,
            &b,
            &c,
            None,
            Some(&flag),
            &opts,
            &fast(TiledTile::Fast),
        )
        .unwrap();
        g.run_all(&d).unwrap();
        assert_eq!(flag.is_raised_blocking(g).unwrap(), raised, "{x}");
        let out = c.to_f32_vec().unwrap();
        assert!(
            out.iter()
                .all(|&y| y.is_infinite() == raised && !y.is_nan()),
            "{out:?}"
        );
    }
}

#[test]
fn in_range_f16_output_leaves_found_inf_clear() {
    // Odd M * N: the last output word's upper half is padding and must not raise it.
    let g = gpu();
    let (m, n, k) = (5, 7, 33);
    let mut r = rng(3);
    for c_dt in [DType::F16, DType::BF16] {
        let a = Tensor::from_f32(g, &[m, k], &random_vec(&mut r, m * k, 1.0), DType::F16).unwrap();
        let b = Tensor::from_f32(g, &[k, n], &random_vec(&mut r, k * n, 1.0), DType::F16).unwrap();
        let c = Tensor::full(g, &[m, n], c_dt, f32::NAN).unwrap();
        let flag = OverflowFlag::new(g).unwrap();
        let d = matmul(g, &a, &b, &c, None, Some(&flag), &MatmulOptions::default()).unwrap();
        g.run_all(&d).unwrap();
        assert!(!flag.is_raised_blocking(g).unwrap(), "{c_dt}");
    }
}

/// GPU-free: the shared shader test translates each variant with the default pipeline
/// constants only; this one covers every layout and tile constant the op sets (and
/// subgroup sizes 16, 32, 64), so the
/// cooperative-matrix kernel (which lavapipe cannot run) reaches naga's SPIR-V writer in
/// every form it is dispatched in.
#[test]
fn every_matmul_pipeline_form_translates_to_spirv() {
    use halfgrad::kernels::{compose, Variant};
    use halfgrad::ops::matmul::{
        COOP, COOP_COPIED, COOP_COPIED_F32, COOP_DIRECT, COOP_DIRECT_F32, COOP_TILE, COOP_TILE_F32,
        TILED, TILED_FAST,
    };
    use naga::back::spv;
    use naga::valid::{Capabilities, ValidationFlags, Validator};

    let translate = |source: &str, constants: &[(&str, f64)]| -> Result<(), String> {
        let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
        let mut validator = Validator::new(ValidationFlags::all(), Capabilities::all());
        let info = validator.validate(&module).map_err(|e| format!("{e:?}"))?;
        let constants: naga::back::PipelineConstants =
            constants.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, "main")),
            &constants,
        )
        .map_err(|e| format!("overrides: {e:?}"))?;
        let pipeline = spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: "main".into(),
        };
        match std::panic::catch_unwind(|| {
            spv::write_vec(&module, &info, &spv::Options::default(), Some(&pipeline)).map(|_| ())
        }) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("SPIR-V: {e:?}")),
            Err(_) => Err("SPIR-V writer panicked".into()),
        }
    };
    let mut failures = Vec::new();
    for c in DType::ALL {
        let coop = compose(&COOP, &Variant::new(&[DType::F16, DType::F16, c], true)).unwrap();
        let tiled = compose(&TILED, &Variant::new(&[DType::F16, DType::BF16, c], true)).unwrap();
        for (ta, tb) in LAYOUTS {
            let (ta, tb) = (f64::from(u8::from(ta)), f64::from(u8::from(tb)));
            for sg in [16.0, 32.0, 64.0] {
                let constants = [("TRANS_A", ta), ("TRANS_B", tb), ("SG", sg)];
                if let Err(e) = translate(&coop, &constants) {
                    failures.push(format!("coop {c} {constants:?}: {e}"));
                }
            }
        }
        let mut tiles = vec![("coop_tile", &COOP_TILE)];
        let mut directs = vec![("coop_direct", &COOP_DIRECT)];
        let mut copieds = vec![("coop_copied", &COOP_COPIED)];
        if c == DType::F32 {
            tiles.push(("coop_tile_f32", &COOP_TILE_F32));
            directs.push(("coop_direct_f32", &COOP_DIRECT_F32));
            copieds.push(("coop_copied_f32", &COOP_COPIED_F32));
        }
        for (name, def) in copieds {
            let copied = compose(def, &Variant::new(&[DType::F16, DType::F16, c], true)).unwrap();
            for (ta, tb) in LAYOUTS {
                let (ta, tb) = (f64::from(u8::from(ta)), f64::from(u8::from(tb)));
                // The Auto tiles of batched / strided products (2x2:4x4, 4x2, 2x4, 2x2 with
                // K slices of 16) among them.
                for (sgm, sgn, fm, f_n, bk, sync) in [
                    (2.0, 4.0, 4.0, 2.0, 16.0, 1.0),
                    (2.0, 2.0, 4.0, 4.0, 32.0, 0.0),
                    (2.0, 2.0, 2.0, 2.0, 64.0, 1.0),
                    (1.0, 1.0, 1.0, 1.0, 16.0, 0.0),
                    (2.0, 2.0, 4.0, 4.0, 16.0, 0.0),
                    (2.0, 2.0, 4.0, 2.0, 16.0, 0.0),
                    (2.0, 2.0, 2.0, 4.0, 16.0, 1.0),
                    (2.0, 2.0, 2.0, 2.0, 16.0, 0.0),
                ] {
                    let constants = [
                        ("TRANS_A", ta),
                        ("TRANS_B", tb),
                        ("SG_M", sgm),
                        ("SG_N", sgn),
                        ("FM", fm),
                        ("FN", f_n),
                        ("CBK", bk),
                        ("EPI_SYNC", sync),
                        ("SG_MIN", 16.0),
                        ("GROUP_M", 1.0 + sync * 3.0),
                        ("SPLIT_K", if name == "coop_copied_f32" { 4.0 } else { 1.0 }),
                    ];
                    if let Err(e) = translate(&copied, &constants) {
                        failures.push(format!("{name} {c} {constants:?}: {e}"));
                    }
                }
            }
        }
        for (name, def) in directs {
            let direct = compose(def, &Variant::new(&[DType::F16, DType::F16, c], true)).unwrap();
            for (ta, tb) in LAYOUTS {
                let (ta, tb) = (f64::from(u8::from(ta)), f64::from(u8::from(tb)));
                for (sgm, sgn, fm, f_n, pipe, sync) in [
                    (2.0, 2.0, 4.0, 4.0, 1.0, 1.0),
                    (2.0, 2.0, 4.0, 4.0, 0.0, 0.0),
                    (1.0, 8.0, 2.0, 3.0, 1.0, 0.0),
                    (1.0, 1.0, 1.0, 1.0, 0.0, 1.0),
                ] {
                    let constants = [
                        ("TRANS_A", ta),
                        ("TRANS_B", tb),
                        ("SG_M", sgm),
                        ("SG_N", sgn),
                        ("FM", fm),
                        ("FN", f_n),
                        ("PIPE", pipe),
                        ("EPI_SYNC", sync),
                        ("SG_MIN", 16.0),
                        ("GROUP_M", 1.0 + 7.0 * pipe),
                    ];
                    if let Err(e) = translate(&direct, &constants) {
                        failures.push(format!("{name} {c} {constants:?}: {e}"));
                    }
                }
            }
        }
        for (name, def) in tiles {
            let tile = compose(def, &Variant::new(&[c], true)).unwrap();
            for (ta, tb) in LAYOUTS {
                let (ta, tb) = (f64::from(u8::from(ta)), f64::from(u8::from(tb)));
                for (sgm, sgn, fm, f_n, bk) in [
                    (2.0, 2.0, 4.0, 4.0, 32.0),
                    (2.0, 2.0, 2.0, 4.0, 32.0),
                    (2.0, 2.0, 2.0, 2.0, 32.0),
                    (2.0, 4.0, 4.0, 2.0, 32.0),
                    (1.0, 1.0, 1.0, 3.0, 64.0),
                ] {
                    let constants = [
                        ("TRANS_A", ta),
                        ("TRANS_B", tb),
                        ("SG_M", sgm),
                        ("SG_N", sgn),
                        ("FM", fm),
                        ("FN", f_n),
                        ("CBK", bk),
                        ("EPI_SYNC", f64::from(u8::from(bk == 64.0))),
                        ("GROUP_M", if bk == 64.0 { 4.0 } else { 1.0 }),
                    ];
                    if let Err(e) = translate(&tile, &constants) {
                        failures.push(format!("{name} {c} {constants:?}: {e}"));
                    }
                }
            }
        }
        let tiled_fast = compose(
            &TILED_FAST,
            &Variant::new(&[DType::BF16, DType::F16, c], true),
        )
        .unwrap();
        for bk in [8.0, 16.0] {
            if let Err(e) = translate(&tiled_fast, &[("FBK", bk)]) {
                failures.push(format!("tiled_fast {c} FBK {bk}: {e}"));
            }
        }
        for (wg, bk) in [(8.0, 16.0), (16.0, 8.0)] {
            let constants = [("WG_M", wg), ("WG_N", wg), ("BK", bk)];
            if let Err(e) = translate(&tiled, &constants) {
                failures.push(format!("tiled {c} {constants:?}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
