//! Training: [`Trainer`] owns the model, AdamW, the loss scaler and the precision policy.
//!
//! One training step is one command buffer and one submission: the batch goes into the
//! model's persistent input tensors with `queue.write_buffer`; the encoder clears the
//! found-inf flag, then one compute pass records forward, loss, backward, the AdamW step
//! and the loss-scale update. Nothing is read back and nothing is allocated; the host
//! reads statistics only when it asks ([`Trainer::stats`]).
//!
//! - [`config`]: [`TrainConfig`], the digits defaults, the checkpoint metadata form.
//! - [`trainer`]: construction, the step, statistics, the precision path.
//! - [`schedule`]: the learning-rate schedule and the training-input noise.
//! - [`eval`]: evaluation and prediction, batched through the training model.
//! - [`state`]: checkpoints (safetensors) and exact resume.
//! - [`memory`]: bytes held per role, beside the textbook 16 bytes per parameter.

pub mod config;
pub mod eval;
pub mod gpt;
pub mod memory;
pub mod schedule;
pub mod state;
pub mod trainer;

pub use config::{TrainConfig, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_V1, CHECKPOINT_VERSION};
pub use eval::Evaluation;
pub use gpt::{GptEvaluation, GptTrainConfig, GptTrainer};
pub use memory::MemoryReport;
pub use schedule::LrSchedule;
pub use trainer::{describe_path, TrainStats, Trainer};
