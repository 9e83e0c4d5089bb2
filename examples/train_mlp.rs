//! Train an MLP classifier on your own data with the public API.
//!
//! `cargo run --release --example train_mlp`
//!
//! The data: 2-D points on two interleaved spirals (class 0 and 1). Any type that
//! implements `halfgrad::data::Dataset` works; `InMemory` wraps plain vectors.

use halfgrad::amp::Precision;
use halfgrad::data::{Dataset, InMemory, SplitMix64};
use halfgrad::nn::MlpOptions;
use halfgrad::train::{LrSchedule, TrainConfig, Trainer};
use halfgrad::Gpu;

/// `n` points per spiral arm, with a little noise: features (x, y), label = arm.
fn spirals(n: usize, seed: u64) -> halfgrad::Result<InMemory> {
    let mut rng = SplitMix64::new(seed);
    let (mut xy, mut labels) = (Vec::new(), Vec::new());
    for arm in 0..2u32 {
        for i in 0..n {
            let t = 0.25 + 3.0 * i as f32 / n as f32; // radius and angle grow together
            let angle = 2.5 * t + std::f32::consts::PI * arm as f32;
            let mut jitter = || (rng.next_f32() - 0.5) * 0.1;
            xy.push(t * angle.cos() + jitter());
            xy.push(t * angle.sin() + jitter());
            labels.push(arm);
        }
    }
    InMemory::new(xy, labels, 2, 2)
}

fn main() -> halfgrad::Result<()> {
    let gpu = Gpu::new_blocking()?;
    let (train, test) = (spirals(500, 1)?, spirals(200, 2)?);

    let steps = 800;
    let config = TrainConfig {
        precision: Precision::F16, // f16 activations and matmul operands, f32 master weights
        batch: 50,
        lr: 1e-2,
        schedule: LrSchedule::WarmupCosine {
            warmup: 20,
            total: steps,
        },
        input_noise: 0.0,
        ..TrainConfig::default()
    };
    let model = MlpOptions {
        hidden: vec![64, 64],
        ..MlpOptions::default()
    };
    let mut trainer = Trainer::new_blocking(&gpu, config, &model, &train)?;
    println!(
        "path {}; policy {}",
        trainer.describe_path(),
        trainer.policy()
    );

    for step in 1..=steps {
        trainer.step_from(&train)?; // one command buffer, nothing read back
        if step % 200 == 0 {
            let s = trainer.stats_blocking()?; // one readback, on demand
            let e = trainer.evaluate_blocking(&test)?;
            println!(
                "step {step:4}  loss {:.4}  scale {}  test accuracy {:.1}%",
                s.loss,
                s.loss_scale,
                100.0 * e.accuracy
            );
        }
    }
    // Classify points: one from each arm of the test set (labels 0 and 1).
    let (p0, p1) = (test.get(10).0, test.get(210).0);
    let guesses = trainer.predict_blocking(&[p0, p1].concat())?;
    println!("points {p0:?} and {p1:?}: predicted classes {guesses:?}");
    Ok(())
}
