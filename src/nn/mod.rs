//! Layers as explicit forward/backward pairs (llm.c style), and models built from them.

pub mod param;

pub use param::Param;
pub mod init;
