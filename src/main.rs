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
    /// Train the MLP classifier on the embedded digits or your own CSV file (--data):
    /// progress, evaluation, checkpoints.
    Train(cli::train::TrainArgs),
    /// Classify the rows of a CSV file with a trained checkpoint: class and probability.
    Predict(cli::predict::PredictArgs),
    /// A byte-level GPT-2: `gpt train`, `gpt sample`, `gpt eval`, `gpt export` (Hugging Face).
    Gpt(cli::gpt::GptArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if std::env::args_os().len() == 1 {
        // No arguments: a short guide rather than clap's bare usage error. Still exit
        // status 2, clap's for a missing subcommand, so a script that forgot its
        // arguments does not read the guide as a successful run.
        eprint!("{}", cli::GUIDE);
        return ExitCode::from(2);
    }
    let args = Args::parse();
    let result = match args.command {
        Command::Info(a) => cli::info::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Train(a) => cli::train::run(a),
        Command::Predict(a) => cli::predict::run(a),
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
