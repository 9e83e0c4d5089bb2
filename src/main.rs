//! The `halfgrad` command-line tool.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "halfgrad",
    version,
    about = "Mixed-precision neural-network training on WebGPU"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the adapter, the precision paths it offers and the limits that matter.
    Info(cli::info::InfoArgs),
    /// Benchmarks: `bench matmul` (time per product, TFLOP/s, optional reference check).
    Bench(cli::bench::BenchArgs),
    /// Train the MLP classifier on the embedded digits (progress, evaluation, checkpoints).
    Train(cli::train::TrainArgs),
    /// A byte-level GPT-2: `gpt train`, `gpt sample`, `gpt eval`, `gpt export` (Hugging Face).
    Gpt(cli::gpt::GptArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let result = match args.command {
        Command::Info(a) => cli::info::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Train(a) => cli::train::run(a),
        Command::Gpt(a) => cli::gpt::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
