//! Subcommands of the `halfgrad` binary, one module each.

pub mod bench;
pub mod bench_step;
pub mod gpt;
pub mod info;
pub mod recover;
pub mod train;
