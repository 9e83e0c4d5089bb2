//! Deterministic property campaigns over damaged inputs of the GPT's loaders
//! (`cargo xtask fuzz --target text|hf`).
//!
//! ```text
//! cargo run --release --example loader_fuzz -- [--target text|hf] [CASES] [--seed S]
//!                                               [--case I]
//! ```
//!
//! Target `hf` (`nn::gpt::hf::from_files`, and `hf::load` on a folder every 64th case):
//! each case takes a valid Hugging Face export of a small GPT (`config.json` +
//! `model.safetensors`) and damages one or both files: in config.json truncation, byte
//! flips, a size set to a huge, negative, fractional, string, null or array value, a
//! missing key, another `model_type`, unsupported options, sizes that disagree with the
//! weights; in model.safetensors truncation, byte flips, a tensor's dtype changed (F16,
//! BF16, I64, U8, unknown), its shape changed (swapped, grown, rank 3, huge), a tensor
//! removed, renamed or duplicated, offsets past the end. A load must give weights of the
//! parsed config (one value per element) or a typed `Checkpoint` / `Io` error, never a
//! panic, with a peak allocation of at most `HF_ALLOC_FACTOR` x the two files' size +
//! `ALLOC_SLACK`.
//!
//! Target `text` (`TextData::from_bytes`, and `TextData::load` on every 64th case): each
//! case takes a seed text (slices of the shipped King James Bible, random bytes, invalid
//! UTF-8, empty, one byte, exactly the minimum length for its block), damages it with one
//! to three mutations (truncation, byte flips, invalid UTF-8 sequences, NUL runs, splices,
//! duplication, deletion) and loads it with a block size drawn from tiny, boundary
//! (`len / 10` and its neighbours), huge (`2^40`, `usize::MAX / 2`, `usize::MAX`) and zero
//! values; a loaded text then serves its evaluation windows and a training batch.
//! Properties:
//!
//! 1. no panic;
//! 2. the outcome is a `TextData` or a typed error (`InvalidArgument`, `Empty`,
//!    `TooLarge`, `Io`), nothing else;
//! 3. a loaded text keeps its bytes, its split is `len * 9 / 10`, and every window it
//!    serves lies inside its split;
//! 4. the load's peak heap allocation (the counting global allocator below) stays within
//!    `ALLOC_FACTOR * input size + ALLOC_SLACK` bytes.
//!
//! Case `i` depends only on `(seed, i)`, so `--case i` replays one failure. Exit status 0
//! only if every case passed.

use halfgrad::data::text::{Split, TextBatcher, TextData, KJV};
use halfgrad::data::SplitMix64;
use halfgrad::nn::gpt::{hf, GptConfig, GptWeights};
use halfgrad::Error;
use serde_json::{json, Map, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

// ---------------------------------------------------------------------------------------
// Counting allocator (as in examples/checkpoint_fuzz.rs)

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            grow(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak allocation a load may reach beyond the live input: this many times its size ...
/// (`load` reads the file once into a vector; `from_bytes` takes the vector as is.)
const ALLOC_FACTOR: usize = 2;
/// ... plus this many bytes (the name, error messages, the path).
const ALLOC_SLACK: usize = 16 * 1024;

/// Bytes of allocation above the live level at the start of `f`, and its result.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

// ---------------------------------------------------------------------------------------
// Inputs

fn pick(rng: &mut SplitMix64, n: usize) -> usize {
    rng.below(n as u64) as usize
}

/// Seed texts: slices of the KJV, random bytes, invalid UTF-8, tiny texts.
fn seed_text(rng: &mut SplitMix64) -> Vec<u8> {
    match pick(rng, 8) {
        0 => Vec::new(),
        1 => vec![b'a'],
        2 => vec![0xFF; 1 + pick(rng, 64)],
        3 => (0..pick(rng, 4096)).map(|_| rng.next_u64() as u8).collect(),
        4 => {
            // Exactly the shortest text for a small block: 10 * block + 1 bytes.
            let block = 1 + pick(rng, 40);
            KJV[..10 * block + 1].to_vec()
        }
        5 => "\u{FEFF}ünïcödé ✓ 𝄞\r\n"
            .repeat(1 + pick(rng, 40))
            .into_bytes(),
        _ => {
            let scale = 4 + pick(rng, 13);
            let len = 1 + pick(rng, 1 << scale);
            let start = pick(rng, KJV.len() - len);
            KJV[start..start + len].to_vec()
        }
    }
}

const KINDS: [&str; 8] = [
    "truncate",
    "flip bytes",
    "invalid UTF-8",
    "NUL run",
    "splice KJV",
    "duplicate",
    "delete range",
    "lone surrogate / overlong",
];

fn mutate(b: &mut Vec<u8>, kind: usize, rng: &mut SplitMix64) {
    let at = |rng: &mut SplitMix64, len: usize| pick(rng, len + 1);
    match kind {
        0 => {
            let n = at(rng, b.len());
            b.truncate(n);
        }
        1 => {
            for _ in 0..1 + pick(rng, 8) {
                if !b.is_empty() {
                    let i = pick(rng, b.len());
                    b[i] ^= 1 << pick(rng, 8);
                }
            }
        }
        2 => {
            let bad: &[&[u8]] = &[b"\xFF", b"\xC0\x80", b"\xE2\x82", b"\xF8\x88\x80\x80\x80"];
            let i = at(rng, b.len());
            let s = bad[pick(rng, bad.len())];
            b.splice(i..i, s.iter().copied());
        }
        3 => {
            let i = at(rng, b.len());
            let n = pick(rng, 300);
            b.splice(i..i, std::iter::repeat_n(0u8, n));
        }
        4 => {
            let len = pick(rng, 2048);
            let start = pick(rng, KJV.len() - len);
            let i = at(rng, b.len());
            b.splice(i..i, KJV[start..start + len].iter().copied());
        }
        5 => {
            let copy = b.clone();
            b.extend_from_slice(&copy);
        }
        6 => {
            let i = at(rng, b.len());
            let j = i + pick(rng, b.len() - i + 1);
            b.drain(i..j);
        }
        _ => {
            let bad: &[&[u8]] = &[b"\xED\xA0\x80", b"\xE0\x80\xAF", b"\xF4\x90\x80\x80"];
            let i = at(rng, b.len());
            b.splice(i..i, bad[pick(rng, bad.len())].iter().copied());
        }
    }
}

/// A block size: tiny, at the boundary for this length, huge, or zero.
fn block_for(len: usize, rng: &mut SplitMix64) -> usize {
    let boundary = (len / 10).max(1);
    match pick(rng, 10) {
        0 => 0,
        1 => 1,
        2 => boundary - 1,
        3 => boundary,
        4 => boundary + 1,
        5 => 1 << 40,
        6 => usize::MAX / 2,
        7 => usize::MAX,
        8 => usize::MAX - pick(rng, 16),
        _ => 1 + pick(rng, 256),
    }
}

/// Case `i`: (bytes, block, mutation kinds).
fn case_input(seed: u64, i: u64) -> (Vec<u8>, usize, Vec<usize>) {
    let mut rng = SplitMix64::new(SplitMix64::mix(seed ^ SplitMix64::mix(i)));
    let mut bytes = seed_text(&mut rng);
    let mut kinds = Vec::new();
    for _ in 0..pick(&mut rng, 4) {
        let k = pick(&mut rng, KINDS.len());
        mutate(&mut bytes, k, &mut rng);
        kinds.push(k);
    }
    let block = block_for(bytes.len(), &mut rng);
    (bytes, block, kinds)
}

// ---------------------------------------------------------------------------------------
// Properties

struct Outcome {
    loaded: bool,
    /// Peak allocation of `from_bytes` (the input vector is moved in, not copied).
    peak: usize,
    /// Peak allocation of `load` (reads the file into one vector), when it ran.
    file_peak: Option<usize>,
}

/// Checks a loaded text (property 3): bytes kept, split at 90%, windows inside.
fn check_loaded(t: &TextData, bytes: &[u8], block: usize) -> Result<(), String> {
    if t.bytes() != bytes || t.block() != block || t.split_at() != bytes.len() * 9 / 10 {
        return Err("loaded text differs from its input".into());
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for split in [Split::Train, Split::Validation] {
        let count = t.eval_window_count(split);
        if count == 0 {
            return Err(format!("{split:?}: no evaluation window"));
        }
        let last = count.saturating_sub(2)..count;
        t.eval_windows(split, last.clone(), &mut x, &mut y)
            .map_err(|e| format!("{split:?} windows {last:?}: {e}"))?;
        if x.len() != last.len() * block || y.len() != x.len() {
            return Err(format!("{split:?}: window lengths {} {}", x.len(), y.len()));
        }
        // One past the end is refused, not served.
        if t.eval_windows(split, count..count + 1, &mut x, &mut y)
            .is_ok()
        {
            return Err(format!("{split:?}: window {count} served"));
        }
        let batch = TextBatcher::new(3, 7).map_err(|e| e.to_string())?;
        TextBatcher::batch_at(batch.state(), t, split, &mut x, &mut y)
            .map_err(|e| format!("{split:?} batch: {e}"))?;
        if x.len() != 3 * block || x.iter().chain(&y).any(|&v| v > 255) {
            return Err(format!("{split:?}: batch of {} tokens", x.len()));
        }
    }
    Ok(())
}

fn typed(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidArgument(_) | Error::Empty { .. } | Error::TooLarge { .. } | Error::Io { .. }
    )
}

fn run_case(
    bytes: &[u8],
    block: usize,
    with_file: Option<&std::path::Path>,
) -> Result<Outcome, String> {
    let owned = bytes.to_vec();
    let (r, peak) = measured(|| TextData::from_bytes("fuzz.txt", owned, block));
    let budget = ALLOC_FACTOR * bytes.len() + ALLOC_SLACK;
    if peak > budget {
        return Err(format!(
            "from_bytes allocated {peak} bytes for {} (budget {budget})",
            bytes.len()
        ));
    }
    let loaded = match &r {
        Ok(t) => {
            check_loaded(t, bytes, block)?;
            true
        }
        Err(e) if typed(e) => false,
        Err(e) => return Err(format!("untyped error: {e:?}")),
    };
    let mut file_peak = None;
    if let Some(path) = with_file {
        std::fs::write(path, bytes).map_err(|e| e.to_string())?;
        let (r2, peak) = measured(|| TextData::load(path, block));
        file_peak = Some(peak);
        if peak > budget {
            return Err(format!(
                "load allocated {peak} bytes for {} (budget {budget})",
                bytes.len()
            ));
        }
        match (&r2, loaded) {
            (Ok(t), true) => check_loaded(t, bytes, block)?,
            (Err(Error::Io { .. }), false) => {}
            (other, _) => {
                return Err(format!(
                    "load and from_bytes disagree: {:?} vs loaded={loaded}",
                    other.as_ref().map(|_| ())
                ))
            }
        }
    }
    Ok(Outcome {
        loaded,
        peak,
        file_peak,
    })
}

static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn main() -> std::process::ExitCode {
    let mut cases = 100_000u64;
    let mut seed = 0x5445_5854_4655_5A5Au64;
    let mut only = None;
    let mut target = "text".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let num = |v: Option<String>| v.and_then(|v| v.replace('_', "").parse::<u64>().ok());
        match a.as_str() {
            "--seed" => seed = num(it.next()).expect("--seed N"),
            "--case" => only = Some(num(it.next()).expect("--case I")),
            "--cases" => cases = num(it.next()).expect("--cases N"),
            "--target" => {
                target = it.next().unwrap_or_default();
                if target != "text" && target != "hf" {
                    eprintln!("loader_fuzz: unknown target `{target}` (targets: text, hf)");
                    return std::process::ExitCode::FAILURE;
                }
            }
            n => cases = num(Some(n.to_string())).expect("CASES"),
        }
    }
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut m) = LAST_PANIC.lock() {
            *m = info.to_string();
        }
    }));
    if target == "hf" {
        return hf_campaign(seed, only, cases);
    }
    let dir = std::env::temp_dir().join(format!("halfgrad-loader-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let file = dir.join("case.txt");
    let range = match only {
        Some(i) => i..i + 1,
        None => 0..cases,
    };
    println!(
        "text loader fuzz: {} cases, seed {seed:#x}",
        range.end - range.start
    );
    let start = Instant::now();
    let (mut n, mut loaded, mut failures) = (0u64, 0u64, 0u64);
    let (mut max_ratio, mut max_peak, mut ratio_case) = (0.0f64, 0usize, 0u64);
    let (mut file_ratio, mut file_case, mut files) = (0.0f64, 0u64, 0u64);
    for i in range {
        let (bytes, block, kinds) = case_input(seed, i);
        n += 1;
        let with_file = (i % 64 == 0).then_some(file.as_path());
        match catch_unwind(AssertUnwindSafe(|| run_case(&bytes, block, with_file))) {
            Ok(Ok(o)) => {
                loaded += o.loaded as u64;
                max_peak = max_peak.max(o.peak);
                let ratio = o.peak as f64 / bytes.len().max(1) as f64;
                if ratio > max_ratio && bytes.len() >= 4096 {
                    (max_ratio, ratio_case) = (ratio, i);
                }
                if let Some(p) = o.file_peak {
                    files += 1;
                    max_peak = max_peak.max(p);
                    let ratio = p as f64 / bytes.len().max(1) as f64;
                    if ratio > file_ratio && bytes.len() >= 4096 {
                        (file_ratio, file_case) = (ratio, i);
                    }
                }
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures <= 10 {
                    println!(
                        "case {i} (block {block}, {} bytes, {:?}): {e}",
                        bytes.len(),
                        kinds_named(&kinds)
                    );
                }
            }
            Err(_) => {
                failures += 1;
                if failures <= 10 {
                    let msg = LAST_PANIC.lock().map(|m| m.clone()).unwrap_or_default();
                    println!(
                        "case {i} (block {block}, {} bytes, {:?}): PANIC {msg}",
                        bytes.len(),
                        kinds_named(&kinds)
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "text loader fuzz: {n} cases in {secs:.1} s, {loaded} loaded, {} refused with typed \
         errors, {failures} failed",
        n - loaded - failures
    );
    println!(
        "max peak allocation {max_peak} bytes; max peak / input size (inputs >= 4 KiB): \
         from_bytes {max_ratio:.3} (case {ratio_case}), load {file_ratio:.3} (case {file_case}, \
         {files} files); budget {ALLOC_FACTOR} x size + {ALLOC_SLACK}"
    );
    if failures == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

fn kinds_named(kinds: &[usize]) -> Vec<&'static str> {
    kinds.iter().map(|&k| KINDS[k]).collect()
}

// ---------------------------------------------------------------------------------------
// Target hf: Hugging Face export folders

/// Peak allocation of an `hf` load: this many times the two files' size, plus
/// [`ALLOC_SLACK`] x 4. (The checkpoint parse holds the tensors, the weights are a
/// second copy, f16 tensors widen to f32 and Conv1D weights are transposed once more.)
const HF_ALLOC_FACTOR: usize = 8;

/// Valid exports: (config.json, model.safetensors) of three small GPTs.
fn hf_seeds() -> Vec<(String, Vec<u8>)> {
    let configs = [
        GptConfig {
            vocab: 11,
            block: 7,
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
        },
        GptConfig {
            vocab: 5,
            block: 3,
            n_layer: 2,
            n_head: 1,
            n_embd: 4,
        },
        GptConfig {
            vocab: 256,
            block: 16,
            n_layer: 1,
            n_head: 2,
            n_embd: 16,
        },
    ];
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| hf::to_files(&GptWeights::init(c, i as u64).unwrap()).unwrap())
        .collect()
}

fn huge_value(rng: &mut SplitMix64) -> Value {
    match pick(rng, 12) {
        0 => json!(u64::MAX),
        1 => json!(-1),
        2 => json!(1.5),
        3 => json!(1e300),
        4 => json!("12"),
        5 => Value::Null,
        6 => json!([1, 2]),
        7 => json!({}),
        8 => json!(0),
        9 => json!(1u64 << 40),
        10 => json!(u32::MAX),
        _ => json!(1 + pick(rng, 70)),
    }
}

const HF_KINDS: [&str; 12] = [
    "config: truncate",
    "config: flip bytes",
    "config: size value",
    "config: remove key",
    "config: option",
    "weights: truncate",
    "weights: flip bytes",
    "weights: dtype",
    "weights: shape",
    "weights: drop / rename / duplicate tensor",
    "weights: offsets",
    "weights: header garbage",
];

/// The safetensors header as JSON and the data after it.
fn st_split(b: &[u8]) -> Option<(Map<String, Value>, Vec<u8>)> {
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let header = b.get(8..8usize.checked_add(n)?)?;
    let map = serde_json::from_slice::<Value>(header)
        .ok()?
        .as_object()?
        .clone();
    Some((map, b[8 + n..].to_vec()))
}

fn st_join(map: &Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(map).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

fn mutate_hf(config: &mut Vec<u8>, weights: &mut Vec<u8>, kind: usize, rng: &mut SplitMix64) {
    let keys = [
        "vocab_size",
        "n_positions",
        "n_layer",
        "n_head",
        "n_embd",
        "n_ctx",
    ];
    let edit_config = |config: &mut Vec<u8>, f: &mut dyn FnMut(&mut Map<String, Value>)| {
        if let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(config) {
            f(&mut m);
            *config = serde_json::to_vec_pretty(&Value::Object(m)).unwrap();
        }
    };
    let mut edit_tensors =
        |weights: &mut Vec<u8>, f: &mut dyn FnMut(&mut Map<String, Value>, &mut SplitMix64)| {
            if let Some((mut m, data)) = st_split(weights) {
                f(&mut m, rng);
                *weights = st_join(&m, &data);
            }
        };
    let tensor_names = |m: &Map<String, Value>| -> Vec<String> {
        m.keys().filter(|k| *k != "__metadata__").cloned().collect()
    };
    match kind {
        0 => {
            let n = pick(rng, config.len() + 1);
            config.truncate(n);
        }
        1 => {
            for _ in 0..1 + pick(rng, 4) {
                if !config.is_empty() {
                    let i = pick(rng, config.len());
                    config[i] ^= 1 << pick(rng, 8);
                }
            }
        }
        2 => {
            let key = keys[pick(rng, keys.len())];
            let v = huge_value(rng);
            edit_config(config, &mut |m| {
                m.insert(key.into(), v.clone());
            });
        }
        3 => {
            let key = keys[pick(rng, keys.len())];
            edit_config(config, &mut |m| {
                m.remove(key);
            });
        }
        4 => {
            let options = [
                ("model_type", json!("gpt_neox")),
                ("model_type", json!(7)),
                ("activation_function", json!("relu")),
                ("layer_norm_epsilon", json!(1e-6)),
                ("tie_word_embeddings", json!(false)),
                ("n_inner", json!(12)),
                ("scale_attn_by_inverse_layer_idx", json!(true)),
            ];
            let (k, v) = options[pick(rng, options.len())].clone();
            edit_config(config, &mut |m| {
                m.insert(k.into(), v.clone());
            });
        }
        5 => {
            let n = pick(rng, weights.len() + 1);
            weights.truncate(n);
        }
        6 => {
            for _ in 0..1 + pick(rng, 8) {
                if !weights.is_empty() {
                    let i = pick(rng, weights.len());
                    weights[i] ^= 1 << pick(rng, 8);
                }
            }
        }
        7 => edit_tensors(weights, &mut |m, rng| {
            let names = tensor_names(m);
            let name = &names[pick(rng, names.len())];
            let dt = ["F16", "BF16", "I64", "U8", "F64", "X", "f32"][pick(rng, 7)];
            m[name]["dtype"] = json!(dt);
        }),
        8 => edit_tensors(weights, &mut |m, rng| {
            let names = tensor_names(m);
            let name = &names[pick(rng, names.len())];
            let shape: Vec<u64> = m[name]["shape"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let new = match pick(rng, 5) {
                0 => shape.iter().rev().copied().collect(),
                1 => shape.iter().map(|d| d.saturating_add(1)).collect(),
                2 => [shape.clone(), vec![1]].concat(),
                3 => vec![u64::MAX, 2],
                _ => vec![],
            };
            m[name]["shape"] = json!(new);
        }),
        9 => edit_tensors(weights, &mut |m, rng| {
            let names = tensor_names(m);
            let name = names[pick(rng, names.len())].clone();
            match pick(rng, 4) {
                0 => {
                    m.remove(&name);
                }
                1 => {
                    let v = m.remove(&name).unwrap();
                    m.insert(format!("{name}.renamed"), v);
                }
                2 => {
                    let v = m[&name].clone();
                    m.insert("lm_head.weight".into(), v);
                }
                _ => {
                    let v = m[&name].clone();
                    m.insert(name.replace("transformer.", ""), v);
                }
            }
        }),
        10 => edit_tensors(weights, &mut |m, rng| {
            let names = tensor_names(m);
            let name = &names[pick(rng, names.len())];
            let offsets = match pick(rng, 4) {
                0 => json!([0, u64::MAX]),
                1 => json!([8, 4]),
                2 => json!([1u64 << 40, (1u64 << 40) + 4]),
                _ => json!([0, 0]),
            };
            m[name]["data_offsets"] = offsets;
        }),
        _ => {
            let garbage: Vec<u8> = (0..pick(rng, 64)).map(|_| rng.next_u64() as u8).collect();
            let at = pick(rng, weights.len().min(200) + 1);
            weights.splice(at..at, garbage);
        }
    }
}

/// Case `i` of target hf: (config bytes, weights bytes, mutation kinds).
fn hf_case(seeds: &[(String, Vec<u8>)], seed: u64, i: u64) -> (Vec<u8>, Vec<u8>, Vec<usize>) {
    let mut rng = SplitMix64::new(SplitMix64::mix(seed ^ 0x4846 ^ SplitMix64::mix(i)));
    let (c, w) = &seeds[pick(&mut rng, seeds.len())];
    let (mut config, mut weights) = (c.clone().into_bytes(), w.clone());
    let mut kinds = Vec::new();
    for _ in 0..1 + pick(&mut rng, 3) {
        let k = pick(&mut rng, HF_KINDS.len());
        mutate_hf(&mut config, &mut weights, k, &mut rng);
        kinds.push(k);
    }
    (config, weights, kinds)
}

/// Properties of one hf case; `dir`: also write the folder and load it from disk.
fn hf_run(config: &[u8], weights: &[u8], dir: Option<&std::path::Path>) -> Result<Outcome, String> {
    let text = String::from_utf8_lossy(config).into_owned();
    let size = text.len() + weights.len();
    let budget = HF_ALLOC_FACTOR * size + 4 * ALLOC_SLACK;
    let (r, peak) = measured(|| hf::from_files(&text, weights, "fuzz"));
    if peak > budget {
        return Err(format!(
            "from_files allocated {peak} bytes for {size} (budget {budget})"
        ));
    }
    let check = |r: &halfgrad::Result<GptWeights>| -> Result<bool, String> {
        match r {
            Ok(w) => {
                let specs = w.config().param_specs();
                let ok = w.values().len() == specs.len()
                    && w.values()
                        .iter()
                        .zip(&specs)
                        .all(|(v, s)| v.len() == s.len());
                if ok {
                    Ok(true)
                } else {
                    Err("loaded weights do not match their config".into())
                }
            }
            Err(Error::Checkpoint { .. } | Error::Io { .. }) => Ok(false),
            Err(e) => Err(format!("untyped error: {e:?}")),
        }
    };
    let loaded = check(&r)?;
    let mut file_peak = None;
    if let Some(dir) = dir {
        std::fs::write(dir.join("config.json"), config).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("model.safetensors"), weights).map_err(|e| e.to_string())?;
        let (r2, peak) = measured(|| hf::load(dir));
        file_peak = Some(peak);
        let budget = HF_ALLOC_FACTOR * (config.len() + weights.len()) + 4 * ALLOC_SLACK;
        if peak > budget {
            return Err(format!("load allocated {peak} bytes (budget {budget})"));
        }
        let loaded_from_disk = check(&r2)?;
        // Lossy UTF-8 can only turn a refused config into another refused one.
        if loaded_from_disk && !loaded {
            return Err("load accepted what from_files refused".into());
        }
    }
    Ok(Outcome {
        loaded,
        peak,
        file_peak,
    })
}

fn hf_campaign(seed: u64, only: Option<u64>, cases: u64) -> std::process::ExitCode {
    let seeds = hf_seeds();
    for (c, w) in &seeds {
        assert!(matches!(
            hf_run(c.as_bytes(), w, None),
            Ok(Outcome { loaded: true, .. })
        ));
    }
    let dir = std::env::temp_dir().join(format!("halfgrad-hf-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let range = match only {
        Some(i) => i..i + 1,
        None => 0..cases,
    };
    println!(
        "hf loader fuzz: {} cases, seed {seed:#x}, seed exports of {:?} bytes",
        range.end - range.start,
        seeds
            .iter()
            .map(|(c, w)| c.len() + w.len())
            .collect::<Vec<_>>()
    );
    let start = Instant::now();
    let (mut n, mut loaded, mut failures) = (0u64, 0u64, 0u64);
    let (mut max_ratio, mut max_peak, mut ratio_case) = (0.0f64, 0usize, 0u64);
    for i in range {
        let Ok((config, weights, kinds)) = catch_unwind(|| hf_case(&seeds, seed, i)) else {
            let msg = LAST_PANIC.lock().map(|m| m.clone()).unwrap_or_default();
            println!("case {i}: the harness's mutation panicked: {msg}");
            return std::process::ExitCode::FAILURE;
        };
        n += 1;
        let with_dir = (i % 64 == 0).then_some(dir.as_path());
        let named: Vec<&str> = kinds.iter().map(|&k| HF_KINDS[k]).collect();
        match catch_unwind(AssertUnwindSafe(|| hf_run(&config, &weights, with_dir))) {
            Ok(Ok(o)) => {
                loaded += o.loaded as u64;
                for p in [Some(o.peak), o.file_peak].into_iter().flatten() {
                    max_peak = max_peak.max(p);
                    let ratio = p as f64 / (config.len() + weights.len()).max(1) as f64;
                    if ratio > max_ratio {
                        (max_ratio, ratio_case) = (ratio, i);
                    }
                }
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures <= 10 {
                    println!("case {i} ({named:?}): {e}");
                }
            }
            Err(_) => {
                failures += 1;
                if failures <= 10 {
                    let msg = LAST_PANIC.lock().map(|m| m.clone()).unwrap_or_default();
                    println!("case {i} ({named:?}): PANIC {msg}");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "hf loader fuzz: {n} cases in {secs:.1} s, {loaded} loaded, {} refused with typed \
         errors, {failures} failed",
        n - loaded - failures
    );
    println!(
        "max peak allocation {max_peak} bytes; max peak / (config + weights) size \
         {max_ratio:.2} (case {ratio_case}); budget {HF_ALLOC_FACTOR} x size + {}",
        4 * ALLOC_SLACK
    );
    if failures == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Each campaign's first 2,000 cases as normal tests (`cargo test --example loader_fuzz`);
/// the full campaigns are `cargo xtask fuzz --target text|hf`.
#[cfg(test)]
mod tests {
    /// The counting allocator is global: two cases measured at once would count each
    /// other's allocations, so the tests take turns.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn two_thousand_damaged_texts_load_or_fail_typed_within_the_allocation_budget() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("halfgrad-loader-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("case.txt");
        let mut loaded = 0;
        for i in 0..2000 {
            let (bytes, block, kinds) = super::case_input(0x5445_5854_4655_5A5A, i);
            let with_file = (i % 64 == 0).then_some(file.as_path());
            match super::run_case(&bytes, block, with_file) {
                Ok(o) => loaded += o.loaded as u32,
                Err(e) => panic!("case {i} (block {block}, {kinds:?}): {e}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(loaded > 200, "only {loaded} of 2000 damaged texts loaded");
    }

    #[test]
    fn two_thousand_damaged_hugging_face_exports_load_or_fail_typed() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let seeds = super::hf_seeds();
        let dir = std::env::temp_dir().join(format!("halfgrad-hf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut loaded = 0;
        for i in 0..2000 {
            let (config, weights, kinds) = super::hf_case(&seeds, 0x5445_5854_4655_5A5A, i);
            let with_dir = (i % 64 == 0).then_some(dir.as_path());
            match super::hf_run(&config, &weights, with_dir) {
                Ok(o) => loaded += o.loaded as u32,
                Err(e) => panic!("case {i} ({kinds:?}): {e}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(loaded > 20, "only {loaded} of 2000 damaged exports loaded");
    }
}
