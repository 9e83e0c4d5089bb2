//! Subcommands of the `halfgrad` binary, one module each.

pub mod bench;
pub mod bench_step;
pub mod bench_timing;
pub mod info;
pub mod recover;
pub mod train;
