//! Subcommands of the `halfgrad` binary, one module each.

pub mod bench;
pub mod info;
pub mod train;
