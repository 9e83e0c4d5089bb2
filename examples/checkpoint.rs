//! Save and load checkpoints: a whole training run (exact resume), and the plain
//! container for tensors of your own.
//!
//! `cargo run --release --example checkpoint`

use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::Digits;
use halfgrad::nn::MlpOptions;
use halfgrad::train::{TrainConfig, Trainer};
use halfgrad::Gpu;

fn main() -> halfgrad::Result<()> {
    let dir = std::env::temp_dir();
    let gpu = Gpu::new_blocking()?;
    let (train, _test) = Digits::load()?;

    // 1. A training run: weights, Adam moments, loss scaler, step and batch order.
    let model = MlpOptions {
        hidden: vec![32],
        ..MlpOptions::default()
    };
    let mut trainer = Trainer::new_blocking(&gpu, TrainConfig::default(), &model, &train)?;
    for _ in 0..20 {
        trainer.step_from(&train)?;
    }
    let path = dir.join("halfgrad-example-run.safetensors");
    trainer.save(&path)?; // atomic: a crash mid-save keeps the old file
    let mut resumed = Trainer::load(&gpu, &path)?; // checks every name, shape and setting
    resumed.step_from(&train)?; // continues at step 21 with the same batch order
    println!(
        "saved at step {}, resumed and now at step {}",
        trainer.steps(),
        resumed.steps()
    );
    let ck = Checkpoint::load(&path)?;
    println!("model {} | {}", ck.meta("model")?, ck.meta("pytorch")?);
    let names: Vec<&str> = ck.tensors.iter().take(4).map(|t| t.name.as_str()).collect();
    println!("first tensors {names:?} (PyTorch state-dict names) ...");

    // 2. The container alone: named f32 / f16 / bf16 / u32 tensors plus string metadata.
    let mut mine = Checkpoint::new();
    mine.push_f32("embedding", &[2, 3], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])?;
    mine.push_u32("counter", &[1], &[7])?;
    mine.set_meta("note", "written by examples/checkpoint.rs");
    let small = dir.join("halfgrad-example-tensors.safetensors");
    mine.save(&small)?;
    let back = Checkpoint::load(&small)?; // verifies the checksum
    println!(
        "embedding {:?}, counter {:?}, note {:?}",
        back.get_f32("embedding", &[2, 3])?,
        back.get_u32("counter", &[1])?,
        back.meta("note")?
    );
    std::fs::remove_file(path).ok();
    std::fs::remove_file(small).ok();
    Ok(())
}
