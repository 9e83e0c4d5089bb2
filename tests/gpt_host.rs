//! The GPT's host side, without a GPU: the Hugging Face GPT-2 export and import (a round
//! trip through a folder gives the same bits; every malformed or mismatched folder is a
//! typed error naming the file, and a failed load or save writes nothing) and sanity
//! checks of the f64 reference the GPU tests compare against.

#[path = "common/gpt_reference.rs"]
mod gpt_reference;

use halfgrad::checkpoint::{Checkpoint, NamedTensor};
use halfgrad::nn::gpt::{hf, GptConfig, GptWeights};
use halfgrad::{DType, Error};
use std::path::{Path, PathBuf};

const CONFIG: GptConfig = GptConfig {
    vocab: 13,
    block: 6,
    n_layer: 2,
    n_head: 2,
    n_embd: 8,
};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("halfgrad-gpt-hf-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn weights() -> GptWeights {
    GptWeights::init(&CONFIG, 5).unwrap()
}

/// The export's safetensors as a checkpoint, edited by `f`, written back into `dir`.
fn edit_weights(dir: &Path, f: impl FnOnce(&mut Checkpoint)) {
    let path = dir.join(hf::WEIGHTS_FILE);
    let mut ck = Checkpoint::load_unverified(&path).unwrap();
    ck.metadata.remove("halfgrad.checksum");
    f(&mut ck);
    std::fs::write(&path, ck.to_bytes().unwrap()).unwrap();
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join(hf::CONFIG_FILE);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

fn checkpoint_error(r: Result<GptWeights, Error>, file: &str, words: &str) {
    match r {
        Err(Error::Checkpoint { path, message }) => {
            assert!(path.ends_with(file), "{path} should name {file}");
            assert!(message.contains(words), "`{message}` should say `{words}`");
            println!("{path}: {message}");
        }
        other => panic!("expected a checkpoint error saying `{words}`, got {other:?}"),
    }
}

#[test]
fn export_then_import_gives_the_same_bits() {
    let dir = TempDir::new("roundtrip");
    let w = weights();
    hf::save(&dir.0, &w).unwrap();
    assert_eq!(hf::load(&dir.0).unwrap(), w);

    // The files are what transformers expects.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join(hf::CONFIG_FILE)).unwrap())
            .unwrap();
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["architectures"][0], "GPT2LMHeadModel");
    assert_eq!(config["vocab_size"], 13);
    assert_eq!(config["n_positions"], 6);
    assert_eq!(config["n_inner"], serde_json::Value::Null);
    assert_eq!(config["activation_function"], "gelu_new");
    assert_eq!(config["tie_word_embeddings"], true);
    assert!(config["eos_token_id"].as_u64().unwrap() < 13);
    let ck = Checkpoint::load_unverified(&dir.0.join(hf::WEIGHTS_FILE)).unwrap();
    assert_eq!(ck.metadata.get("format").map(String::as_str), Some("pt"));
    assert!(ck.tensors.iter().all(|t| t.dtype == DType::F32));
    assert!(ck
        .tensors
        .iter()
        .all(|t| t.name.starts_with("transformer.")));
    // Conv1D layout: (in, out); halfgrad's (out, in) transposed.
    let c_attn = ck.tensor("transformer.h.1.attn.c_attn.weight").unwrap();
    assert_eq!(c_attn.shape, [8, 24]);
    let ours = w.get("transformer.h.1.attn.c_attn.weight").unwrap();
    let theirs = c_attn.to_f32().unwrap();
    assert_eq!(theirs[3 * 24 + 17], ours[17 * 8 + 3]);
    assert_eq!(
        ck.tensor("transformer.h.0.mlp.c_fc.weight").unwrap().shape,
        [8, 32]
    );
    assert_eq!(
        ck.tensor("transformer.h.0.mlp.c_proj.weight")
            .unwrap()
            .shape,
        [32, 8]
    );
    assert_eq!(ck.tensor("transformer.wte.weight").unwrap().shape, [13, 8]);
    assert_eq!(ck.tensor("transformer.wpe.weight").unwrap().shape, [6, 8]);

    // Saving again replaces the files atomically, with no temporary files left.
    hf::save(&dir.0, &GptWeights::init(&CONFIG, 6).unwrap()).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "model.safetensors"]);
    assert_eq!(
        hf::load(&dir.0).unwrap(),
        GptWeights::init(&CONFIG, 6).unwrap()
    );
}

#[test]
fn imports_what_save_pretrained_and_the_hub_write() {
    let dir = TempDir::new("variants");
    let w = weights();
    hf::save(&dir.0, &w).unwrap();
    // Hub GPT-2 files: no `transformer.` prefix, mask buffers, a tied lm_head, f16.
    edit_weights(&dir.0, |ck| {
        for t in &mut ck.tensors {
            t.name = t.name.trim_start_matches("transformer.").to_string();
        }
        let wte = ck.tensor("wte.weight").unwrap().clone();
        ck.push(NamedTensor {
            name: "lm_head.weight".into(),
            ..wte
        })
        .unwrap();
        ck.push_f32("h.0.attn.bias", &[1, 1, 6, 6], &[1.0; 36])
            .unwrap();
        ck.push_f32("h.1.attn.masked_bias", &[], &[-1e4]).unwrap();
    });
    edit_config(&dir.0, |c| {
        c.remove("n_inner");
        c.remove("tie_word_embeddings");
        c.insert("activation_function".into(), "gelu_pytorch_tanh".into());
    });
    assert_eq!(hf::load(&dir.0).unwrap(), w);

    // 16-bit tensors are widened exactly.
    edit_weights(&dir.0, |ck| {
        for t in &mut ck.tensors {
            let v = t.to_f32().unwrap();
            *t = NamedTensor::encode(t.name.clone(), &t.shape, DType::F16, &v).unwrap();
        }
    });
    let loaded = hf::load(&dir.0).unwrap();
    for ((_, a), (_, b)) in loaded.iter().zip(w.iter()) {
        for (x, y) in a.iter().zip(b) {
            assert_eq!(*x, DType::F16.round(*y));
        }
    }
}

#[test]
fn a_shorter_context_keeps_the_first_positions_and_a_longer_one_is_refused() {
    let w = weights();
    let short = w.clone().with_block(4).unwrap();
    assert_eq!(short.config().block, 4);
    assert_eq!(
        short.get("transformer.wpe.weight").unwrap(),
        &w.get("transformer.wpe.weight").unwrap()[..4 * 8]
    );
    assert_eq!(short.num_params(), short.config().num_params());
    match w.with_block(7) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("block 7") && m.contains("6"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_folders_are_typed_errors_naming_the_file() {
    let root = TempDir::new("bad");
    // A missing folder, and a file where the folder should be.
    match hf::load(&root.0.join("nope")) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("nope")),
        other => panic!("{other:?}"),
    }
    std::fs::write(root.0.join("file"), b"x").unwrap();
    match hf::load(&root.0.join("file")) {
        Err(Error::Io { message, .. }) => assert!(message.contains("not a directory")),
        other => panic!("{other:?}"),
    }

    let fresh = |name: &str| {
        let d = root.0.join(name);
        hf::save(&d, &weights()).unwrap();
        d
    };
    // Missing files.
    let d = fresh("no-config");
    std::fs::remove_file(d.join(hf::CONFIG_FILE)).unwrap();
    assert!(matches!(hf::load(&d), Err(Error::Io { path, .. }) if path.ends_with("config.json")));
    let d = fresh("no-weights");
    std::fs::remove_file(d.join(hf::WEIGHTS_FILE)).unwrap();
    assert!(
        matches!(hf::load(&d), Err(Error::Io { path, .. }) if path.ends_with("model.safetensors"))
    );

    // Malformed or unsupported config.json.
    let d = fresh("json");
    std::fs::write(d.join(hf::CONFIG_FILE), b"{\"model_type\": \"gpt2\", ").unwrap();
    checkpoint_error(hf::load(&d), "config.json", "not valid JSON");
    std::fs::write(
        d.join(hf::CONFIG_FILE),
        vec![b' '; (hf::MAX_CONFIG_BYTES + 1) as usize],
    )
    .unwrap();
    checkpoint_error(hf::load(&d), "config.json", "larger than");
    type Edit = fn(&mut serde_json::Map<String, serde_json::Value>);
    let cases: [(Edit, &str); 9] = [
        (
            |c| drop(c.insert("model_type".into(), "llama".into())),
            "model_type",
        ),
        (|c| drop(c.remove("vocab_size")), "missing `vocab_size`"),
        (|c| drop(c.insert("n_embd".into(), "8".into())), "`n_embd`"),
        (
            |c| drop(c.insert("n_head".into(), 3.into())),
            "do not divide",
        ),
        (
            |c| drop(c.insert("n_layer".into(), 0.into())),
            "layers must be",
        ),
        (
            |c| drop(c.insert("activation_function".into(), "relu".into())),
            "activation",
        ),
        (
            |c| drop(c.insert("layer_norm_epsilon".into(), 1e-6.into())),
            "eps",
        ),
        (|c| drop(c.insert("n_inner".into(), 16.into())), "n_inner"),
        (
            |c| drop(c.insert("tie_word_embeddings".into(), false.into())),
            "tie_word",
        ),
    ];
    for (i, (edit, words)) in cases.into_iter().enumerate() {
        let d = fresh(&format!("config-{i}"));
        edit_config(&d, edit);
        checkpoint_error(hf::load(&d), "config.json", words);
    }

    // Tensors that do not match the config.
    let d = fresh("missing-tensor");
    edit_weights(&d, |ck| {
        ck.tensors.retain(|t| t.name != "transformer.h.1.ln_2.bias")
    });
    checkpoint_error(
        hf::load(&d),
        "model.safetensors",
        "missing tensor `transformer.h.1.ln_2.bias`",
    );
    let d = fresh("shape");
    edit_weights(&d, |ck| {
        let t = ck
            .tensors
            .iter_mut()
            .find(|t| t.name.ends_with("h.0.attn.c_attn.weight"))
            .unwrap();
        t.shape = vec![24, 8]; // halfgrad's layout, not Conv1D's
    });
    checkpoint_error(hf::load(&d), "model.safetensors", "needs [8, 24]");
    let d = fresh("extra");
    edit_weights(&d, |ck| {
        ck.push_f32("transformer.h.0.attn.rotary", &[2], &[0.0; 2])
            .unwrap()
    });
    checkpoint_error(hf::load(&d), "model.safetensors", "unexpected tensor");
    let d = fresh("untied");
    edit_weights(&d, |ck| {
        let mut head = ck.tensor("transformer.wte.weight").unwrap().clone();
        head.name = "lm_head.weight".into();
        head.data[0] ^= 1;
        ck.push(head).unwrap();
    });
    checkpoint_error(hf::load(&d), "model.safetensors", "untied");
    let d = fresh("u32");
    edit_weights(&d, |ck| {
        let t = ck
            .tensors
            .iter_mut()
            .find(|t| t.name.ends_with("ln_f.bias"))
            .unwrap();
        *t = NamedTensor::from_u32(t.name.clone(), &[8], &[0; 8]).unwrap();
    });
    checkpoint_error(hf::load(&d), "model.safetensors", "u32");
    // A config claiming more layers than the file holds.
    let d = fresh("layers");
    edit_config(&d, |c| {
        drop(c.insert("n_layer".into(), 1_000_000_000.into()))
    });
    checkpoint_error(hf::load(&d), "model.safetensors", "12 per layer");
    let d = fresh("wider");
    edit_config(&d, |c| drop(c.insert("n_embd".into(), 16.into())));
    checkpoint_error(hf::load(&d), "model.safetensors", "needs [13, 16]");
    let d = fresh("truncated");
    let bytes = std::fs::read(d.join(hf::WEIGHTS_FILE)).unwrap();
    std::fs::write(d.join(hf::WEIGHTS_FILE), &bytes[..bytes.len() - 3]).unwrap();
    checkpoint_error(hf::load(&d), "model.safetensors", "");

    // A save that cannot write leaves nothing behind (a file where the folder goes).
    let blocked = root.0.join("file");
    assert!(matches!(
        hf::save(&blocked, &weights()),
        Err(Error::Io { .. })
    ));
    assert_eq!(std::fs::read(&blocked).unwrap(), b"x");
}

#[test]
fn the_f64_reference_is_causal_and_starts_near_uniform() {
    let w = weights();
    let (batch, t) = (2, 5);
    let tokens: Vec<u32> = (0..10).map(|i| (i * 7 + 3) % 13).collect();
    let targets: Vec<u32> = (0..10).map(|i| (i * 5 + 1) % 13).collect();
    let out = gpt_reference::forward(&w, &tokens, &targets, batch, t);
    // GPT-2's small initialisation: logits near 0, loss near ln(vocab).
    assert!((out.loss - 13f64.ln()).abs() < 0.05, "loss {}", out.loss);
    assert_eq!(out.logits.len(), batch * t * 13);
    // Changing the last token of sequence 0 changes only its last position's logits.
    let mut other = tokens.clone();
    other[4] = (other[4] + 1) % 13;
    let out2 = gpt_reference::forward(&w, &other, &targets, batch, t);
    for r in 0..batch * t {
        let same = out.logits[r * 13..(r + 1) * 13] == out2.logits[r * 13..(r + 1) * 13];
        assert_eq!(same, r != 4, "row {r}");
    }
    // A finite difference of the loss agrees with a one-sided estimate.
    let p = gpt_reference::params_f64(&w);
    let fd = gpt_reference::finite_difference(
        w.config(),
        &p,
        0,
        3 * 8 + 2,
        1e-4,
        &tokens,
        &targets,
        batch,
        t,
    );
    let mut q = p.clone();
    q[0][3 * 8 + 2] += 1e-6;
    let up = gpt_reference::forward_f64(w.config(), &q, &tokens, &targets, batch, t).loss;
    assert!((fd - (up - out.loss) / 1e-6).abs() < 1e-4, "{fd}");
    assert!(fd != 0.0);
}
