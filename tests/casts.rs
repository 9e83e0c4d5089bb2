//! Casts on the GPU (lavapipe in CI): every f16 / bf16 bit pattern round-trips, and
//! f32 -> f16 / bf16 matches the `half` crate bit for bit, on both f16 paths.

mod common;

use common::{gpu, gpu_packed, gpus_for_f16};
use halfgrad::selfcheck::{edge_case_f32, narrow_matches_half, random_f32, roundtrip_all_patterns};
use halfgrad::{DType, Error, Tensor};

fn assert_passed(r: halfgrad::selfcheck::CheckResult) {
    println!(
        "{}: {} values, {} mismatches",
        r.name, r.checked, r.mismatches
    );
    assert!(
        r.passed(),
        "{}: {} mismatches, first: {:?}",
        r.name,
        r.mismatches,
        r.first_mismatches
    );
}

#[test]
fn all_f16_patterns_round_trip_on_both_paths() {
    for (path, g) in gpus_for_f16() {
        println!("path {path}");
        assert_passed(pollster::block_on(roundtrip_all_patterns(g, DType::F16)).unwrap());
    }
}

#[test]
fn all_bf16_patterns_round_trip() {
    assert_passed(pollster::block_on(roundtrip_all_patterns(gpu(), DType::BF16)).unwrap());
}

#[test]
fn f32_to_f16_matches_half_on_edge_cases_and_a_million_random_values() {
    let edges = edge_case_f32();
    let random = random_f32(1_000_000, 42);
    for (path, g) in gpus_for_f16() {
        println!("path {path}");
        assert_passed(
            pollster::block_on(narrow_matches_half(g, &edges, DType::F16, "edge cases")).unwrap(),
        );
        assert_passed(
            pollster::block_on(narrow_matches_half(g, &random, DType::F16, "1e6 random")).unwrap(),
        );
    }
}

#[test]
fn f32_to_bf16_matches_half_on_edge_cases_and_a_million_random_values() {
    assert_passed(
        pollster::block_on(narrow_matches_half(
            gpu(),
            &edge_case_f32(),
            DType::BF16,
            "edge cases",
        ))
        .unwrap(),
    );
    assert_passed(
        pollster::block_on(narrow_matches_half(
            gpu(),
            &random_f32(1_000_000, 7),
            DType::BF16,
            "1e6 random",
        ))
        .unwrap(),
    );
}

#[test]
fn odd_lengths_cast_every_element() {
    // Whole octets (the 16-byte path), partial ones (the pair tail) and both together.
    for (path, g) in gpus_for_f16() {
        for n in [1usize, 7, 8, 9, 16, 33, 129, 1031] {
            let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 3.0).collect();
            for from in DType::ALL {
                for to in DType::ALL {
                    let x = Tensor::from_f32(g, &[n], &values, from).unwrap();
                    let y = Tensor::full(g, &[n], to, f32::NAN).unwrap(); // poisoned
                    g.run(&[&halfgrad::ops::cast::cast(g, &x, &y).unwrap()])
                        .unwrap();
                    let got = y.to_f32_vec().unwrap();
                    for i in 0..n {
                        let want = to.round(from.round(values[i]));
                        assert_eq!(
                            got[i].to_bits(),
                            want.to_bits(),
                            "{path} {from}->{to} n={n} i={i}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn add_into_matches_f64_on_whole_and_partial_octets() {
    use halfgrad::flag::OverflowFlag;
    let mut r = common::rng(5);
    for (path, g) in gpus_for_f16() {
        for n in [1usize, 5, 8, 13, 64, 1035] {
            for dx in DType::ALL {
                for dy in DType::ALL {
                    let xs = common::random_vec(&mut r, n, 3.0);
                    let ys = common::random_vec(&mut r, n, 3.0);
                    let x = Tensor::from_f32(g, &[n], &xs, dx).unwrap();
                    let y = Tensor::from_f32(g, &[n], &ys, dy).unwrap();
                    let flag = OverflowFlag::new(g).unwrap();
                    g.run(&[&halfgrad::ops::accumulate::add_into(g, &x, &y, &flag).unwrap()])
                        .unwrap();
                    let got = y.to_f32_vec().unwrap();
                    for i in 0..n {
                        // The sum is taken in f32, then rounded once to y's dtype.
                        let sum = dx.round(xs[i]) + dy.round(ys[i]);
                        let want = dy.round(sum);
                        assert_eq!(
                            got[i].to_bits(),
                            want.to_bits(),
                            "{path} {dx}+={dy} n={n} i={i}"
                        );
                        let exact = dx.round(xs[i]) as f64 + dy.round(ys[i]) as f64;
                        let tol = match dy {
                            DType::F32 => common::TOL_F32,
                            DType::F16 => common::TOL_F16,
                            _ => common::TOL_BF16,
                        };
                        assert!((got[i] as f64 - exact).abs() <= tol * (1.0 + exact.abs()));
                    }
                    assert!(!flag.is_raised_blocking(g).unwrap(), "{path} n={n}");
                }
            }
        }
    }
    // An overflow in the 16-bit store of a whole octet and of a tail pair raises the flag.
    for (path, g) in gpus_for_f16() {
        for n in [8usize, 9] {
            let mut xs = vec![1.0f32; n];
            xs[n - 1] = 60000.0;
            let x = Tensor::from_f32(g, &[n], &xs, DType::F16).unwrap();
            let y = Tensor::from_f32(g, &[n], &xs, DType::F16).unwrap();
            let flag = halfgrad::flag::OverflowFlag::new(g).unwrap();
            g.run(&[&halfgrad::ops::accumulate::add_into(g, &x, &y, &flag).unwrap()])
                .unwrap();
            assert!(flag.is_raised_blocking(g).unwrap(), "{path} n={n}");
        }
    }
}

#[test]
fn copy_words_copies_every_word() {
    let g = gpu();
    for words_each in [1u32, 2, 3, 4] {
        for n16 in [1usize, 7, 33, 257] {
            let values: Vec<f32> = (0..4 * n16).map(|i| i as f32 * 0.37 - 3.0).collect();
            let x = Tensor::from_f32(g, &[4 * n16], &values, DType::F32).unwrap();
            let y = Tensor::full(g, &[4 * n16], DType::F32, f32::NAN).unwrap(); // poisoned
            g.run(&[&halfgrad::ops::cast::copy_words(g, &x, &y, words_each).unwrap()])
                .unwrap();
            let got = y.to_f32_vec().unwrap();
            for (i, (a, b)) in got.iter().zip(&values).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "words={words_each} n16={n16} i={i}"
                );
            }
        }
    }
    let x = Tensor::zeros(g, &[4], DType::F32).unwrap();
    let y = Tensor::zeros(g, &[8], DType::F32).unwrap();
    assert!(matches!(
        halfgrad::ops::cast::copy_words(g, &x, &y, 1),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        halfgrad::ops::cast::copy_words(g, &x, &x, 9),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let g = gpu();
    assert!(matches!(
        Tensor::from_f32(g, &[2, 3], &[1.0; 5], DType::F32),
        Err(Error::DataLength {
            expected: 6,
            got: 5,
            ..
        })
    ));
    assert!(matches!(
        Tensor::empty(g, &[0, 4], DType::F16),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        Tensor::from_f32(g, &[0], &[], DType::F32),
        Err(Error::Empty { .. })
    ));
    let limit = g.caps().max_storage_buffer_binding_size;
    let too_many = (limit / 4 + 16) as usize;
    assert!(matches!(
        Tensor::empty(g, &[too_many], DType::F32),
        Err(Error::TooLarge { .. })
    ));
    let x = Tensor::zeros(g, &[4], DType::F32).unwrap();
    let y = Tensor::zeros(g, &[5], DType::F16).unwrap();
    assert!(matches!(
        halfgrad::ops::cast::cast(g, &x, &y),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn f16_native_kernels_on_an_adapter_without_shader_f16_are_refused() {
    use halfgrad::kernels::{KernelDef, Slot, F32_ONLY};
    static NEEDS_F16: KernelDef = KernelDef {
        name: "test_needs_f16",
        source: "//!kernel k\n@compute @workgroup_size(1) fn main() {}\n",
        section: "k",
        slots: &[Slot::read("x", F32_ONLY)],
        params: false,
        cooperative_matrix: false,
        needs_f16: true,
    };
    let g = gpu_packed();
    assert!(matches!(
        g.pipeline(&NEEDS_F16, &[DType::F32], &[]),
        Err(Error::MissingFeature { .. })
    ));
}
