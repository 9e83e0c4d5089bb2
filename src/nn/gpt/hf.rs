//! Hugging Face GPT-2 checkpoints: a folder with `config.json` and `model.safetensors` in
//! the layout `transformers.GPT2LMHeadModel.from_pretrained(DIR)` loads, written from
//! [`GptWeights`] ([`save`], [`to_files`]) and read back into them ([`load`],
//! [`from_files`]) to fine-tune (`halfgrad gpt train --init DIR`).
//!
//! Layout: tensors `transformer.wte.weight` `(vocab, n_embd)`, `transformer.wpe.weight`
//! `(n_positions, n_embd)`, per block `transformer.h.N.ln_1.{weight,bias}`,
//! `attn.c_attn`, `attn.c_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj` (weights stored
//! `(in, out)` as GPT-2's `Conv1D` does: halfgrad's `(out, in)` transposed), then
//! `transformer.ln_f`; f32; no `lm_head.weight` (tied to the token embedding). Metadata
//! `format: pt`, which `transformers` requires.
//!
//! Reading accepts what `save_pretrained` and the Hub write: names with or without the
//! `transformer.` prefix, F32 / F16 / BF16 tensors, the attention-mask buffers
//! (`attn.bias`, `attn.masked_bias`, ignored) and an `lm_head.weight` equal to the token
//! embedding. Everything else that does not fit is an error naming the file: a missing
//! or mis-shaped tensor, an unexpected one, an untied head, a config this model cannot
//! compute (another activation, LayerNorm epsilon, inner width, attention scaling).
//! Allocation stays within a small multiple of the two files' sizes: `config.json` is
//! refused past [`MAX_CONFIG_BYTES`], and the config's sizes are checked against the
//! tensors actually present before anything is built from them.

use super::config::GptConfig;
use super::params::{GptWeights, ParamSpec, WTE};
use crate::checkpoint::Checkpoint;
use crate::ops::layernorm::DEFAULT_EPS;
use crate::{Error, Result};
use serde_json::{json, Value};

/// The config file's name inside an export folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file's name inside an export folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Largest `config.json` read (a GPT-2 config is under 1 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The `transformers` GPT-2 config for `config`: no dropout, tied embeddings, GELU tanh
/// (`gelu_new`), LayerNorm epsilon 1e-5, and begin / end token ids inside the vocabulary
/// (0: never a byte of text).
pub fn config_json(config: &GptConfig) -> String {
    let value = json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab,
        "n_positions": config.block,
        "n_ctx": config.block,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": null,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": DEFAULT_EPS as f64,
        "tie_word_embeddings": true,
        "initializer_range": 0.02,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "torch_dtype": "float32",
        "use_cache": true,
    });
    // serde_json sorts the keys: the same config always gives the same bytes.
    let mut s = serde_json::to_string_pretty(&value).unwrap_or_default();
    s.push('\n');
    s
}

/// Reads a `transformers` GPT-2 `config.json` (the text `json`, from `origin` for error
/// messages). Every missing, mistyped or unsupported entry is an [`Error::Checkpoint`]
/// naming `origin`; the sizes are validated ([`GptConfig::validate`]).
pub fn parse_config(json: &str, origin: &str) -> Result<GptConfig> {
    let bad = |m: String| Error::Checkpoint {
        path: origin.to_string(),
        message: m,
    };
    let value: Value =
        serde_json::from_str(json).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    match obj.get("model_type").and_then(Value::as_str) {
        Some("gpt2") => {}
        Some(other) => return Err(bad(format!("model_type is {other:?}, expected \"gpt2\""))),
        None => return Err(bad("no string `model_type` (expected \"gpt2\")".into())),
    }
    let size = |key: &str| -> Result<usize> {
        let v = obj
            .get(key)
            .ok_or_else(|| bad(format!("missing `{key}`")))?;
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad(format!("`{key}` = {v} is not a non-negative integer")))
    };
    let config = GptConfig {
        vocab: size("vocab_size")?,
        block: size("n_positions")?,
        n_layer: size("n_layer")?,
        n_head: size("n_head")?,
        n_embd: size("n_embd")?,
    };
    config
        .validate()
        .map_err(|e| bad(format!("unsupported sizes: {e}")))?;
    // Entries that change the function computed: absent means GPT2Config's default.
    let unsupported = |key: &str, v: &Value, want: &str| {
        bad(format!(
            "`{key}` = {v} is not supported (halfgrad's GPT computes {want})"
        ))
    };
    if let Some(v) = obj.get("n_inner") {
        if !v.is_null() && v.as_u64() != Some(config.n_inner() as u64) {
            return Err(unsupported("n_inner", v, "an MLP of 4 x n_embd: null"));
        }
    }
    if let Some(v) = obj.get("activation_function") {
        if !matches!(v.as_str(), Some("gelu_new" | "gelu_pytorch_tanh")) {
            return Err(unsupported(
                "activation_function",
                v,
                "GELU with the tanh approximation: \"gelu_new\"",
            ));
        }
    }
    if let Some(v) = obj.get("layer_norm_epsilon") {
        let eps = v.as_f64().unwrap_or(f64::NAN);
        if (eps - DEFAULT_EPS as f64).abs() > 1e-12 {
            return Err(unsupported(
                "layer_norm_epsilon",
                v,
                "LayerNorm with eps 1e-5",
            ));
        }
    }
    for (key, want) in [
        ("tie_word_embeddings", true),
        ("scale_attn_weights", true),
        ("scale_attn_by_inverse_layer_idx", false),
        ("add_cross_attention", false),
    ] {
        if let Some(v) = obj.get(key) {
            if v.as_bool() != Some(want) {
                return Err(unsupported(key, v, &format!("`{key}`: {want}")));
            }
        }
    }
    Ok(config)
}

/// Whether `spec` is one of GPT-2's `Conv1D` weights (stored `(in, out)` in the file):
/// every 2-D block parameter; the embeddings keep their layout.
fn is_conv1d(spec: &ParamSpec) -> bool {
    spec.is_matrix() && spec.name.starts_with("transformer.h.")
}

/// `(rows, cols)` row-major -> `(cols, rows)` row-major.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The weights as a Hugging Face `model.safetensors` (in memory): GPT-2 names, `Conv1D`
/// weights transposed to `(in, out)`, f32, metadata `format: pt`.
pub fn to_safetensors(weights: &GptWeights) -> Result<Checkpoint> {
    let mut ck = Checkpoint::new();
    ck.set_meta("format", "pt");
    for (spec, values) in weights.iter() {
        if is_conv1d(spec) {
            let (out, inp) = (spec.shape[0], spec.shape[1]);
            ck.push_f32(&spec.name, &[inp, out], &transpose(values, out, inp))?;
        } else {
            ck.push_f32(&spec.name, &spec.shape, values)?;
        }
    }
    Ok(ck)
}

/// Reads the weights of `config` (from its `config.json`) out of a Hugging Face
/// `model.safetensors` already parsed into `ck`; see the module docs for what is
/// accepted. Errors are [`Error::Checkpoint`]s naming `ck`'s file and the tensor.
pub fn from_safetensors(ck: &Checkpoint, config: &GptConfig) -> Result<GptWeights> {
    let origin = ck.origin().to_string();
    let bad = |m: String| Error::Checkpoint {
        path: origin.clone(),
        message: m,
    };
    config.validate().map_err(|e| bad(e.to_string()))?;
    // Every block has 12 tensors: a config claiming more blocks than the file can hold
    // is refused before its parameter list is built.
    if config.n_layer > ck.tensors.len() / 12 {
        return Err(bad(format!(
            "config.json says {} layers, but the file holds only {} tensors (12 per layer)",
            config.n_layer,
            ck.tensors.len()
        )));
    }
    let prefixed = ck
        .tensors
        .iter()
        .any(|t| t.name.starts_with("transformer."));
    let file_name = |ours: &str| -> String {
        if prefixed {
            ours.to_string()
        } else {
            ours.strip_prefix("transformer.")
                .unwrap_or(ours)
                .to_string()
        }
    };
    let specs = config.param_specs();
    let mut values = Vec::with_capacity(specs.len());
    for spec in &specs {
        let name = file_name(&spec.name);
        let t = ck
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| bad(format!("missing tensor `{name}` (model {config})")))?;
        let expected: Vec<usize> = if is_conv1d(spec) {
            vec![spec.shape[1], spec.shape[0]]
        } else {
            spec.shape.clone()
        };
        if t.shape != expected {
            return Err(bad(format!(
                "tensor `{name}` has shape {:?}, config.json ({config}) needs {expected:?}",
                t.shape
            )));
        }
        let v = t
            .to_f32()
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        values.push(if is_conv1d(spec) {
            transpose(&v, spec.shape[1], spec.shape[0])
        } else {
            v
        });
    }
    // What else may be there: the attention-mask buffers and a tied LM head.
    for t in &ck.tensors {
        let known = specs.iter().any(|s| file_name(&s.name) == t.name);
        if known || t.name.ends_with(".attn.bias") || t.name.ends_with(".attn.masked_bias") {
            continue;
        }
        if t.name == "lm_head.weight" {
            let wte = &values[0];
            let head = t.to_f32().map_err(|e| bad(e.to_string()))?;
            if t.shape != specs[0].shape
                || head
                    .iter()
                    .zip(wte)
                    .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                return Err(bad(format!(
                    "`lm_head.weight` differs from `{}`: an untied LM head is not supported",
                    file_name(WTE)
                )));
            }
            continue;
        }
        return Err(bad(format!(
            "unexpected tensor `{}` of shape {:?}: not part of a GPT-2 {config}",
            t.name, t.shape
        )));
    }
    GptWeights::from_values(config, values).map_err(|e| bad(e.to_string()))
}

/// The two files of an export, in memory: `config.json` text and `model.safetensors`
/// bytes (what [`save`] writes; the browser offers them as downloads).
pub fn to_files(weights: &GptWeights) -> Result<(String, Vec<u8>)> {
    Ok((
        config_json(weights.config()),
        to_safetensors(weights)?.to_bytes()?,
    ))
}

/// Reads an export from its two files' contents; `origin` names the folder in errors.
pub fn from_files(config: &str, safetensors: &[u8], origin: &str) -> Result<GptWeights> {
    let parsed = parse_config(config, &format!("{origin}/{CONFIG_FILE}"))?;
    let ck = Checkpoint::from_bytes_unverified(safetensors, &format!("{origin}/{WEIGHTS_FILE}"))?;
    from_safetensors(&ck, &parsed)
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{load, save};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use std::fs::{self, File, OpenOptions};
    use std::io::{self, Read, Write};
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Distinguishes temporary files of concurrent saves within one process.
    static SAVE_COUNTER: AtomicU64 = AtomicU64::new(0);

    fn io_err(path: &Path, what: &str, e: io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            message: format!("{what}: {e}"),
        }
    }

    /// Writes `dir/config.json` and `dir/model.safetensors` (creating `dir` if needed).
    /// Both files are encoded before anything touches disk; each is written atomically
    /// (a temporary file in `dir`, flushed, renamed over the target), the weights first.
    pub fn save(dir: &Path, weights: &GptWeights) -> Result<()> {
        let (config, bytes) = to_files(weights)?;
        fs::create_dir_all(dir).map_err(|e| io_err(dir, "creating the folder", e))?;
        write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
        write_atomic(&dir.join(CONFIG_FILE), config.as_bytes())
    }

    /// Reads an export folder written by [`save`] or by `save_pretrained` (see the
    /// module docs). A missing folder or file is an [`Error::Io`] naming it; anything
    /// malformed or not matching is an [`Error::Checkpoint`] naming the file.
    pub fn load(dir: &Path) -> Result<GptWeights> {
        let meta = fs::metadata(dir).map_err(|e| io_err(dir, "opening the folder", e))?;
        if !meta.is_dir() {
            return Err(io_err(
                dir,
                "opening the folder",
                io::Error::other(
                    "not a directory (expected a folder with config.json and model.safetensors)",
                ),
            ));
        }
        let config_path = dir.join(CONFIG_FILE);
        let file = File::open(&config_path).map_err(|e| io_err(&config_path, "reading", e))?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| io_err(&config_path, "reading", e))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(Error::Checkpoint {
                path: config_path.display().to_string(),
                message: format!("larger than {MAX_CONFIG_BYTES} bytes: not a GPT-2 config"),
            });
        }
        let config = parse_config(&text, &config_path.display().to_string())?;
        let ck = Checkpoint::load_unverified(&dir.join(WEIGHTS_FILE))?;
        from_safetensors(&ck, &config)
    }

    /// Temp file in the same folder, flushed, renamed over `path`; on failure the old
    /// file is untouched and the temp file removed.
    fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.{}-{}.tmp",
            std::process::id(),
            SAVE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            })
            .map_err(|e| io_err(&tmp, "writing", e))
            .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_err(path, "replacing", e)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }
}
