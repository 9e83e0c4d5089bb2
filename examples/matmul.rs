//! Run one matrix product on the GPU: C = A @ B with f16 operands and f32 accumulation.
//!
//! `cargo run --release --example matmul`

use halfgrad::ops::matmul::{matmul, MatmulOptions};
use halfgrad::{DType, Gpu, Tensor};

fn main() -> halfgrad::Result<()> {
    let gpu = Gpu::new_blocking()?;
    let (m, k, n) = (3, 4, 2);
    // a: (3, 4), b: (4, 2), row-major; rounded to f16 on upload.
    let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 * 0.25).collect();
    let a_gpu = Tensor::from_f32(&gpu, &[m, k], &a, DType::F16)?;
    let b_gpu = Tensor::from_f32(&gpu, &[k, n], &b, DType::F16)?;
    let c_gpu = Tensor::empty(&gpu, &[m, n], DType::F32)?;

    // Build the dispatch once (pipeline, bind group); run it as often as needed.
    let product = matmul(
        &gpu,
        &a_gpu,
        &b_gpu,
        &c_gpu,
        None,
        None,
        &MatmulOptions::default(),
    )?;
    gpu.run_all(&product)?;
    let c = c_gpu.to_f32_vec()?;

    for i in 0..m {
        let expected: Vec<f32> = (0..n)
            .map(|j| (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum())
            .collect();
        println!(
            "row {i}: gpu {:?}  cpu {expected:?}",
            &c[i * n..(i + 1) * n]
        );
    }
    Ok(())
}
