//! `halfgrad gpt`: train a byte-level GPT-2 on a text (the shipped King James Bible by
//! default), sample from it, score a text with it, and export it in the Hugging Face
//! GPT-2 layout.

use halfgrad::amp::Precision;
use halfgrad::checkpoint::Checkpoint;
use halfgrad::nn::gpt::{hf, GptConfig, GptWeights};
use halfgrad::{Error, Result};
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
    Train(TrainArgs),
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
pub struct TrainArgs {
    /// Train on this file's bytes (the last 10% is validation) [default: the shipped
    /// King James Bible, data/kjv.txt].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Model preset: tiny (the default: minutes on a CPU adapter) or shakespeare-char
    /// (nanoGPT's size, for real GPUs). --layers, --heads, --embd, --block override it.
    #[arg(long)]
    preset: Option<String>,
    /// Precision of activations and matrix products: f32, f16 or bf16 [default: f16].
    #[arg(long)]
    precision: Option<Precision>,
    /// Transformer blocks.
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads (must divide --embd).
    #[arg(long)]
    heads: Option<usize>,
    /// Width of the residual stream.
    #[arg(long)]
    embd: Option<usize>,
    /// Context length (tokens per sequence).
    #[arg(long)]
    block: Option<usize>,
    /// Sequences per step [default: the preset's].
    #[arg(long)]
    batch: Option<usize>,
    /// Train until this many steps in total (a resumed run continues from its step).
    #[arg(long, default_value_t = 600)]
    steps: u64,
    /// Stop after this many steps of this invocation (save with --checkpoint, continue
    /// with --resume); the schedule still spans --steps.
    #[arg(long)]
    stop_after: Option<u64>,
    /// AdamW peak learning rate [default: 3e-3].
    #[arg(long)]
    lr: Option<f32>,
    /// Warmup steps of the cosine schedule [default: min(100, steps / 10)].
    #[arg(long)]
    warmup: Option<u64>,
    /// AdamW decoupled weight decay [default: 0].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Seed of the initialisation, the batch order and the samples [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Evaluate (validation loss and a sample) every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Validation windows per evaluation, evenly spaced over the validation bytes
    /// (0: all of them).
    #[arg(long, default_value_t = 64)]
    eval_windows: usize,
    /// Bytes generated at each evaluation (0: no sample).
    #[arg(long, default_value_t = 200)]
    sample_tokens: usize,
    /// Save the state to this safetensors file at the end (and on an error, and every
    /// --save-every steps).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Also save every N steps (0: only at the end). Needs --checkpoint.
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Continue the run saved in this checkpoint (bit-exact: weights, Adam moments,
    /// scaler and data position).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Start from a Hugging Face GPT-2 folder (config.json + model.safetensors), e.g.
    /// one `halfgrad gpt export` wrote: fine-tuning.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Print one JSON object at the end instead of the text summary (no progress bar).
    #[arg(long)]
    json: bool,
    /// Print the memory held per role in f32, f16 and bf16 before training.
    #[arg(long)]
    memory: bool,
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
        GptCommand::Train(a) => train(a),
        GptCommand::Sample(a) => sample(a),
        GptCommand::Eval(a) => eval(a),
        GptCommand::Export(a) => export(a),
    }
}

fn train(_args: TrainArgs) -> Result<ExitCode> {
    Err(Error::InvalidArgument(
        "`halfgrad gpt train` needs the GPU model, which is not built yet".into(),
    ))
}

fn sample(_args: SampleArgs) -> Result<ExitCode> {
    Err(Error::InvalidArgument(
        "`halfgrad gpt sample` needs the GPU model, which is not built yet".into(),
    ))
}

fn eval(_args: EvalArgs) -> Result<ExitCode> {
    Err(Error::InvalidArgument(
        "`halfgrad gpt eval` needs the GPU model, which is not built yet".into(),
    ))
}

/// The model config and weights of a GPT trainer checkpoint.
fn load_weights(path: &Path) -> Result<(Checkpoint, GptWeights)> {
    let ck = Checkpoint::load(path)?;
    let config: GptConfig = ck
        .meta("model")?
        .parse()
        .map_err(|e: Error| Error::Checkpoint {
            path: ck.origin().to_string(),
            message: format!("not a GPT checkpoint: {e}"),
        })?;
    let weights = GptWeights::from_checkpoint(&ck, &config)?;
    Ok((ck, weights))
}

fn export(args: ExportArgs) -> Result<ExitCode> {
    let (_, weights) = load_weights(&args.checkpoint)?;
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
