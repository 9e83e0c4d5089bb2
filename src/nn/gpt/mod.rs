//! A GPT-2 language model: its configuration ([`GptConfig`]), its parameters in GPT-2's
//! state-dict layout with GPT-2's initialisation ([`GptWeights`]), the Hugging Face
//! `GPT2LMHeadModel` export and import ([`hf`]), the graph ops it adds (token + position
//! [`embedding`], causal [`attention`], f32 [`residual`] adds), the model's graphs on the
//! GPU ([`GptGraph`]) and host-side sampling ([`SampleConfig`]).

pub mod attention;
pub mod config;
pub mod embedding;
pub mod hf;
pub mod model;
pub mod params;
pub mod residual;
pub mod sample;

pub use config::{GptConfig, GptPreset};
pub use model::{
    check_fits, plan_borrowing_graph, plan_graph, plan_params, upload_params, GptGraph, GptModel,
};
pub use params::{GptWeights, Init, ParamSpec};
pub use sample::SampleConfig;
