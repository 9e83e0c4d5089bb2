//! U32 tensors (labels, token ids): exact round trips and typed errors where a float
//! operation meets an integer tensor.

mod common;

use common::gpu;
use halfgrad::ops::matmul::{matmul, MatmulOptions};
use halfgrad::{DType, Error, Tensor};
use rand::Rng;

#[test]
fn u32_round_trips_exactly() {
    let g = gpu();
    let mut r = common::rng(7);
    let mut values = vec![0, 1, u32::MAX, u32::MAX - 1, 1 << 24, (1 << 24) + 1];
    values.extend((0..37).map(|_| r.random::<u32>()));
    let t = Tensor::from_u32(g, &[values.len()], &values).unwrap();
    assert_eq!(t.dtype(), DType::U32);
    assert_eq!(t.byte_len(), 4 * values.len());
    assert_eq!(t.to_u32_vec().unwrap(), values);

    // write_u32 overwrites in place (per-step labels).
    let next: Vec<u32> = values.iter().map(|v| v.wrapping_mul(3)).collect();
    t.write_u32(&next).unwrap();
    assert_eq!(t.to_u32_vec().unwrap(), next);

    // Odd lengths and rank 2.
    let t = Tensor::from_u32(g, &[3, 3], &[9, 8, 7, 6, 5, 4, 3, 2, u32::MAX]).unwrap();
    assert_eq!(
        t.to_u32_vec().unwrap(),
        vec![9, 8, 7, 6, 5, 4, 3, 2, u32::MAX]
    );
    assert_eq!(
        Tensor::zeros(g, &[5], DType::U32)
            .unwrap()
            .to_u32_vec()
            .unwrap(),
        vec![0; 5]
    );
    assert_eq!(
        Tensor::full(g, &[2], DType::U32, 7.0)
            .unwrap()
            .to_u32_vec()
            .unwrap(),
        vec![7; 2]
    );
    assert_eq!("u32".parse::<DType>().unwrap(), DType::U32);
}

#[test]
fn u32_typed_errors() {
    let g = gpu();
    let labels = Tensor::from_u32(g, &[4], &[1, 2, 3, 4]).unwrap();
    let floats = Tensor::from_f32(g, &[4], &[1.0; 4], DType::F32).unwrap();
    let mismatch = |e: Error| assert!(matches!(e, Error::DTypeMismatch { .. }), "{e:?}");
    mismatch(labels.to_f32_vec().unwrap_err());
    mismatch(labels.write_f32(&[0.0; 4]).unwrap_err());
    mismatch(labels.to_u16_bits().unwrap_err());
    mismatch(floats.to_u32_vec().unwrap_err());
    mismatch(floats.write_u32(&[0; 4]).unwrap_err());
    mismatch(Tensor::from_f32(g, &[4], &[0.0; 4], DType::U32).unwrap_err());
    assert!(matches!(
        labels.write_u32(&[0; 3]).unwrap_err(),
        Error::DataLength { .. }
    ));
    assert!(matches!(
        Tensor::from_u32(g, &[2, 2], &[0; 3]).unwrap_err(),
        Error::DataLength { .. }
    ));
    assert!(matches!(
        Tensor::full(g, &[2], DType::U32, -1.0).unwrap_err(),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(
        Tensor::full(g, &[2], DType::U32, 0.5).unwrap_err(),
        Error::InvalidArgument(_)
    ));
    // Float kernels refuse U32 operands.
    let a = Tensor::from_u32(g, &[2, 2], &[1, 2, 3, 4]).unwrap();
    let b = Tensor::from_f32(g, &[2, 2], &[1.0; 4], DType::F32).unwrap();
    let c = Tensor::zeros(g, &[2, 2], DType::F32).unwrap();
    mismatch(matmul(g, &a, &b, &c, None, None, &MatmulOptions::default()).unwrap_err());
    mismatch(matmul(g, &b, &b, &a, None, None, &MatmulOptions::default()).unwrap_err());
    assert!("u32".parse::<halfgrad::amp::Precision>().is_err());
}
