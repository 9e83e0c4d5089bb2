//! `halfgrad gpt`: train a byte-level GPT-2 on a text (`gpt train`, cli/gpt_train.rs),
//! sample from it, score a text with it, and export it in the Hugging Face GPT-2 layout.

use super::gpt_train::{train, TrainArgs};
use halfgrad::checkpoint::Checkpoint;
use halfgrad::nn::gpt::{hf, GptWeights, SampleConfig};
use halfgrad::train::GptTrainer;
use halfgrad::{Error, Gpu, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct GptArgs {
    #[command(subcommand)]
    command: GptCommand,
}

#[derive(clap::Subcommand)]
enum GptCommand {
    /// Train a GPT on a text's bytes (warmup + cosine schedule, AdamW, clipping, dynamic
    /// loss scaling for f16), with progress, evaluations and a sample at each evaluation.
    Train(Box<TrainArgs>),
    /// Generate text from a checkpoint on the GPU (the same text for the same seed).
    Sample(SampleArgs),
    /// Mean next-byte cross-entropy (natural log) of a text under a checkpoint, over
    /// the text's non-overlapping windows of the checkpoint's block size.
    Eval(EvalArgs),
    /// Write a checkpoint's model as a Hugging Face GPT-2 folder (config.json +
    /// model.safetensors) that `transformers.GPT2LMHeadModel.from_pretrained` loads.
    Export(ExportArgs),
}

#[derive(clap::Args)]
pub struct SampleArgs {
    /// A checkpoint written by `halfgrad gpt train --checkpoint`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to continue [default: a newline].
    #[arg(long, default_value = "\n")]
    prompt: String,
    /// Bytes to generate.
    #[arg(long, default_value_t = 500)]
    tokens: usize,
    /// Softmax temperature (0: always the most likely byte).
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Draw among the K most likely bytes (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object (prompt, text, settings) instead of the text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A checkpoint written by `halfgrad gpt train --checkpoint`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The text to score (its bytes are the tokens).
    #[arg(long)]
    text: PathBuf,
    /// Print one JSON object (val_loss, windows) instead of a line of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A checkpoint written by `halfgrad gpt train --checkpoint`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The folder to write config.json and model.safetensors into (created if needed).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: GptArgs) -> Result<ExitCode> {
    match args.command {
        GptCommand::Train(a) => train(*a),
        GptCommand::Sample(a) => sample(a),
        GptCommand::Eval(a) => eval(a),
        GptCommand::Export(a) => export(a),
    }
}

/// A trainer restored from a GPT checkpoint (for sampling and evaluation).
fn load_trainer(gpu: &Gpu, path: &Path) -> Result<GptTrainer> {
    GptTrainer::load(gpu, path)
}

fn sample(args: SampleArgs) -> Result<ExitCode> {
    let how = SampleConfig {
        temperature: args.temperature,
        top_k: args.top_k,
    };
    how.validate()?;
    let gpu = Gpu::new_blocking()?;
    let mut trainer = load_trainer(&gpu, &args.checkpoint)?;
    let bytes = trainer.sample_blocking(args.prompt.as_bytes(), args.tokens, &how, args.seed)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "prompt": args.prompt,
                "text": text,
                "tokens": args.tokens,
                "temperature": args.temperature,
                "top_k": args.top_k,
                "seed": args.seed,
            })
        );
    } else {
        println!("{}{}", args.prompt, text);
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(args: EvalArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.text).map_err(|e| Error::Io {
        path: args.text.display().to_string(),
        message: format!("reading text: {e}"),
    })?;
    let gpu = Gpu::new_blocking()?;
    let trainer = load_trainer(&gpu, &args.checkpoint)?;
    let name = args.text.display().to_string();
    let e = trainer.evaluate_text_blocking(&name, &bytes)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "val_loss": e.loss, "windows": e.windows, "tokens": e.tokens, "text": name })
        );
    } else {
        println!(
            "{name}: mean next-byte loss {:.4} nats ({:.4} bits) over {} windows of {} bytes",
            e.loss,
            e.loss / std::f64::consts::LN_2,
            e.windows,
            trainer.config().model.block
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The model config and weights of a GPT trainer checkpoint.
fn load_weights(path: &Path) -> Result<GptWeights> {
    let ck = Checkpoint::load(path)?;
    let config = GptTrainer::config_of(&ck)?.model;
    GptWeights::from_checkpoint(&ck, &config)
}

fn export(args: ExportArgs) -> Result<ExitCode> {
    let weights = load_weights(&args.checkpoint)?;
    hf::save(&args.out, &weights)?;
    println!(
        "wrote {} and {} ({}, {} parameters) into {}",
        hf::CONFIG_FILE,
        hf::WEIGHTS_FILE,
        weights.config(),
        weights.num_params(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
