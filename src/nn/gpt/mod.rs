//! A GPT-2 language model: its configuration ([`GptConfig`]), its parameters in GPT-2's
//! state-dict layout with GPT-2's initialisation ([`GptWeights`]) and the Hugging Face
//! `GPT2LMHeadModel` export and import ([`hf`]).

pub mod config;
pub mod hf;
pub mod params;
pub mod sample;

pub use config::{GptConfig, GptPreset};
pub use params::{GptWeights, Init, ParamSpec};
pub use sample::SampleConfig;
