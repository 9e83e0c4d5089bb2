//! Subcommands of the `halfgrad` binary, one module each.

pub mod bench;
pub mod bench_attention;
pub mod bench_gpt;
pub mod bench_step;
pub mod bench_timing;
pub mod data;
pub mod gpt;
pub mod gpt_train;
pub mod info;
pub mod interrupt;
pub mod predict;
pub mod recover;
pub mod report;
pub mod schedule;
pub mod train;

/// What `halfgrad` with no arguments prints.
pub const GUIDE: &str = "\
halfgrad: mixed-precision (f16/bf16) neural-network training on WebGPU

Commands:
  halfgrad info [--check]                 the GPU adapter, its precision paths, a self-check
  halfgrad train [options]                train an MLP classifier on the embedded digits
  halfgrad train --data FILE.csv          ... or on your own CSV (numeric columns + a label)
  halfgrad predict --checkpoint F --data FILE.csv
                                          classify new rows with a trained checkpoint
  halfgrad gpt train [options]            train a byte-level GPT-2 on the shipped King James Bible
  halfgrad gpt sample|eval|export         generate text, score a file, export for Hugging Face
  halfgrad bench matmul|step|copy|gpt     benchmarks

First command to try:
  halfgrad train                          about 30 s on a laptop GPU, prints test accuracy
Then:
  halfgrad gpt train                      a few minutes on a CPU adapter, seconds on a GPU

Options of a command: halfgrad help <command> (or halfgrad <command> --help).
";
