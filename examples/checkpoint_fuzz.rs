//! Deterministic property campaign over damaged checkpoint files (`cargo xtask fuzz`).
//!
//! ```text
//! cargo run --release --example checkpoint_fuzz -- [CASES] [--seed S] [--case I]
//!                                                  [--write-seeds DIR]
//! ```
//!
//! Each case takes one of a few valid checkpoints (the seeds), damages it with one to
//! three mutations (truncation, byte flips, garbage or token-soup headers, huge numbers,
//! overlapping / reversed / out-of-range offsets, wrong dtypes, header lengths past the
//! cap, absurd shapes, duplicate names, insertions, deletions, spliced files) and parses
//! the result with `Checkpoint::from_bytes` and `from_bytes_unverified`. Properties:
//!
//! 1. no panic;
//! 2. the outcome is a checkpoint or `Error::Checkpoint` naming the origin, nothing else;
//! 3. a verified load survives `to_bytes` / `from_bytes` unchanged;
//! 4. the parse's peak heap allocation (measured by the counting global allocator below)
//!    stays within `ALLOC_FACTOR * file size + ALLOC_SLACK` bytes.
//!
//! Case `i` depends only on `(seed, i)`, so `--case i` replays one failure; the failing
//! input is also written to the temp folder. Exit status 0 only if every case passed.

use halfgrad::checkpoint::{Checkpoint, NamedTensor, MAX_HEADER_BYTES};
use halfgrad::data::SplitMix64;
use halfgrad::{DType, Error};
use serde_json::{json, Map, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

// ---------------------------------------------------------------------------------------
// Counting allocator

/// The system allocator, plus the bytes live now and the most live since the last reset.
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
            // Counted as if old and new blocks coexisted (a moving realloc copies).
            grow(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak allocation a parse may reach: this many times the file size ... (The worst
/// inputs are thousands of tiny `__metadata__` entries: `"a":"",` is 7 bytes of JSON
/// but two `String`s in a B-tree node, about 90 bytes.)
const ALLOC_FACTOR: usize = 16;
/// ... plus this many bytes (error messages, small maps, the parser's fixed state).
const ALLOC_SLACK: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------
// Seeds

const ORIGIN: &str = "fuzz.safetensors";

fn values(n: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let specials = [f32::NAN, -0.0, f32::INFINITY, f32::from_bits(1), 65504.0];
    (0..n)
        .map(|i| {
            if i < specials.len() && n > 8 {
                specials[i]
            } else {
                rng.next_f32() * 4.0 - 2.0
            }
        })
        .collect()
}

/// Valid checkpoints of several shapes: empty, mixed dtypes with scalars and zero-size
/// tensors, many small tensors, one larger tensor, a trainer-like state dict (f32
/// weights and moments, u32 counters).
fn seeds() -> Vec<Vec<u8>> {
    let mut rng = SplitMix64::new(7);
    let mut out = Vec::new();

    out.push(Checkpoint::new());

    let mut c = Checkpoint::new();
    c.push_f32("0.weight", &[5, 3], &values(15, &mut rng))
        .unwrap();
    c.push_f32("0.bias", &[5], &values(5, &mut rng)).unwrap();
    c.push(NamedTensor::encode("emb", &[2, 3], DType::F16, &values(6, &mut rng)).unwrap())
        .unwrap();
    c.push(NamedTensor::encode("ln.b", &[3], DType::BF16, &values(3, &mut rng)).unwrap())
        .unwrap();
    c.push_f32("scale", &[], &[65536.0]).unwrap();
    c.push_f32("empty", &[0, 4], &[]).unwrap();
    c.set_meta("step", 17);
    c.set_meta("precision", "f16");
    c.set_meta("unicode ✓ \"quoted\"", "a\nb");
    out.push(c);

    let mut c = Checkpoint::new();
    for i in 0..40 {
        let dt = DType::ALL[i % 3];
        let n = 1 + i % 5;
        c.push(
            NamedTensor::encode(format!("layers.{i}.w"), &[n], dt, &values(n, &mut rng)).unwrap(),
        )
        .unwrap();
    }
    out.push(c);

    let mut c = Checkpoint::new();
    c.push_f32("big", &[64, 33], &values(64 * 33, &mut rng))
        .unwrap();
    c.set_meta("note", "x".repeat(300));
    out.push(c);

    let mut c = Checkpoint::new();
    for (name, shape) in [
        ("0.weight", vec![32, 64]),
        ("0.bias", vec![32]),
        ("2.weight", vec![10, 32]),
        ("2.bias", vec![10]),
        ("optim.0.weight.exp_avg", vec![32, 64]),
        ("optim.0.weight.exp_avg_sq", vec![32, 64]),
        ("optim.lr", vec![1]),
    ] {
        let n = shape.iter().product();
        c.push_f32(name, &shape, &values(n, &mut rng)).unwrap();
    }
    // Counters are U32 in trainer checkpoints.
    c.push_u32("optim.step", &[1], &[4096]).unwrap();
    c.push_u32("scaler.growth_tracker", &[1], &[17]).unwrap();
    for (k, v) in [
        ("format", "halfgrad-trainer-1"),
        ("model", "mlp 64-32-10"),
        ("precision", "bf16"),
        (
            "batcher",
            "{\"len\":1437,\"batch\":32,\"seed\":1,\"position\":4096}",
        ),
    ] {
        c.set_meta(k, v);
    }
    out.push(c);

    out.into_iter().map(|c| c.to_bytes().unwrap()).collect()
}

// ---------------------------------------------------------------------------------------
// Mutations

/// Names of the mutation kinds, for the per-kind tally.
const KINDS: [&str; 17] = [
    "truncate",
    "bit flips",
    "header bit flips",
    "byte overwrite",
    "garbage header",
    "token-soup header",
    "huge number",
    "offsets",
    "wrong dtype",
    "header length",
    "absurd shape",
    "duplicate name",
    "insert/delete",
    "splice",
    "metadata",
    "many tiny entries",
    "junk fields",
];

fn pick(rng: &mut SplitMix64, n: usize) -> usize {
    rng.below(n.max(1) as u64) as usize
}

/// Header length field, header bytes and data, if the first 8 bytes fit the file.
fn split(bytes: &[u8]) -> Option<(usize, &[u8], &[u8])> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    Some((n, header, &bytes[8 + n..]))
}

fn assemble(header: &[u8], data: &[u8], pad: bool) -> Vec<u8> {
    let mut h = header.to_vec();
    if pad {
        h.resize(h.len().next_multiple_of(8), b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// The header as a JSON object, when it is one.
fn header_json(bytes: &[u8]) -> Option<(Map<String, Value>, Vec<u8>)> {
    let (_, header, data) = split(bytes)?;
    match serde_json::from_slice::<Value>(header).ok()? {
        Value::Object(m) => Some((m, data.to_vec())),
        _ => None,
    }
}

fn tensor_keys(m: &Map<String, Value>) -> Vec<String> {
    m.keys().filter(|k| *k != "__metadata__").cloned().collect()
}

fn huge(rng: &mut SplitMix64) -> Value {
    let picks: [Value; 12] = [
        json!(u64::MAX),
        json!(u64::MAX - 1),
        json!(1u64 << 63),
        json!(1u64 << 32),
        json!((1u64 << 32) - 1),
        json!(usize::MAX / 2 + 1),
        json!(0),
        json!(1),
        json!(-1),
        json!(1e300),
        json!(0.5),
        json!("12"),
    ];
    picks[pick(rng, picks.len())].clone()
}

/// Rewrites the header JSON with `f` (keeping the data), or leaves the bytes as they are
/// when the header is not a JSON object.
fn edit_header(
    bytes: &[u8],
    rng: &mut SplitMix64,
    f: impl FnOnce(&mut Map<String, Value>, &mut SplitMix64),
) -> Vec<u8> {
    let Some((mut m, data)) = header_json(bytes) else {
        return bytes.to_vec();
    };
    f(&mut m, rng);
    let text = serde_json::to_vec(&Value::Object(m)).unwrap();
    assemble(&text, &data, rng.below(4) != 0)
}

fn tensor_mut<'a>(
    m: &'a mut Map<String, Value>,
    rng: &mut SplitMix64,
) -> Option<&'a mut Map<String, Value>> {
    let keys = tensor_keys(m);
    if keys.is_empty() {
        return None;
    }
    let k = &keys[pick(rng, keys.len())];
    m.get_mut(k).and_then(Value::as_object_mut)
}

fn mutate_once(b: &mut Vec<u8>, kind: usize, seeds: &[Vec<u8>], rng: &mut SplitMix64) {
    let len = b.len();
    match kind {
        0 => b.truncate(pick(rng, len)),
        1 => {
            for _ in 0..1 + pick(rng, 8) {
                let i = pick(rng, len);
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            let hl = split(b).map_or(len, |(n, _, _)| 8 + n).min(len);
            for _ in 0..1 + pick(rng, 4) {
                let i = pick(rng, hl);
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
        }
        3 => {
            for _ in 0..1 + pick(rng, 16) {
                let i = pick(rng, len);
                if let Some(x) = b.get_mut(i) {
                    *x = rng.next_u64() as u8;
                }
            }
        }
        4 => {
            let data = split(b).map_or(&[][..], |(_, _, d)| d).to_vec();
            let garbage: Vec<u8> = (0..pick(rng, 600)).map(|_| rng.next_u64() as u8).collect();
            *b = assemble(&garbage, &data, rng.below(2) == 0);
        }
        5 => {
            let tokens = [
                "{",
                "}",
                "[",
                "]",
                ",",
                ":",
                "\"dtype\"",
                "\"shape\"",
                "\"data_offsets\"",
                "\"__metadata__\"",
                "\"F32\"",
                "\"F16\"",
                "\"BF16\"",
                "\"w\"",
                "0",
                "1",
                "-1",
                "18446744073709551615",
                "1e999",
                "null",
                "true",
                "\"\\u0000\"",
                "\"\\ud800\"",
                " ",
                "\"",
            ];
            let mut text = String::from("{");
            for _ in 0..pick(rng, 120) {
                text.push_str(tokens[pick(rng, tokens.len())]);
            }
            let data = split(b).map_or(&[][..], |(_, _, d)| d).to_vec();
            *b = assemble(text.as_bytes(), &data, rng.below(2) == 0);
        }
        6 => {
            // A digit run anywhere replaced by a huge (or tiny, or negative) number.
            let i = pick(rng, len);
            if let Some(j) = b[i.min(len)..].iter().position(u8::is_ascii_digit) {
                let at = i + j;
                let end = b[at..]
                    .iter()
                    .position(|c| !c.is_ascii_digit())
                    .map_or(len, |k| at + k);
                let big = huge(rng).to_string();
                b.splice(at..end, big.bytes());
            }
        }
        7 => {
            *b = edit_header(b, rng, |m, rng| {
                let keys = tensor_keys(m);
                if keys.is_empty() {
                    return;
                }
                let (a, c) = (pick(rng, keys.len()), pick(rng, keys.len()));
                let offs = |m: &Map<String, Value>, k: &str| -> (u64, u64) {
                    let o = &m[k]["data_offsets"];
                    (o[0].as_u64().unwrap_or(0), o[1].as_u64().unwrap_or(0))
                };
                let (s, e) = offs(m, &keys[a]);
                let (s2, e2) = offs(m, &keys[c]);
                let new = match rng.below(7) {
                    0 => json!([s2, e2]),                   // overlaps (or equals) another
                    1 => json!([e, s]),                     // reversed
                    2 => json!([s, e + 1 + rng.below(64)]), // past its size
                    3 => json!([s.saturating_sub(1 + rng.below(8)), e]), // overlaps the previous
                    4 => json!([huge(rng), huge(rng)]),
                    5 => json!([s, u64::MAX]),
                    _ => json!([s]),
                };
                if let Some(t) = m.get_mut(&keys[a]).and_then(Value::as_object_mut) {
                    t.insert("data_offsets".into(), new);
                }
            })
        }
        8 => {
            *b = edit_header(b, rng, |m, rng| {
                let dtypes = [
                    "F64", "I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64", "BOOL", "F8_E4M3",
                    "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "C64", "f32", "", "F32 ",
                ];
                let d = dtypes[pick(rng, dtypes.len())];
                if let Some(t) = tensor_mut(m, rng) {
                    t.insert(
                        "dtype".into(),
                        if rng.below(8) == 0 {
                            json!(7)
                        } else {
                            json!(d)
                        },
                    );
                }
            })
        }
        9 => {
            let hl = split(b).map_or(0, |(n, _, _)| n as u64);
            let n: u64 = match rng.below(8) {
                0 => MAX_HEADER_BYTES as u64 + 1 + rng.below(1 << 20),
                1 => u64::MAX - rng.below(16),
                2 => (len as u64).saturating_sub(8) + 1 + rng.below(8),
                3 => 0,
                4 => hl.saturating_sub(1 + rng.below(8)),
                5 => hl + 1 + rng.below(8),
                6 => rng.next_u64(),
                _ => rng.below(len as u64 + 16),
            };
            if b.len() < 8 {
                b.resize(8, 0);
            }
            b[..8].copy_from_slice(&n.to_le_bytes());
        }
        10 => {
            *b = edit_header(b, rng, |m, rng| {
                if let Some(t) = tensor_mut(m, rng) {
                    let shape = match rng.below(6) {
                        0 => json!([u64::MAX, 2]),
                        1 => json!([1u64 << 32, 1u64 << 32]),
                        2 => json!(vec![1; 1 + pick(rng, 2000)]),
                        3 => json!(vec![2; 70]),
                        4 => json!([0, u64::MAX]),
                        _ => json!([-1]),
                    };
                    t.insert("shape".into(), shape);
                }
            })
        }
        11 => {
            // JSON with a key twice (serde keeps one): prepend a copy of an entry.
            if let Some((_, header, data)) = split(b) {
                let text = String::from_utf8_lossy(header).into_owned();
                if let Some((m, _)) = header_json(b) {
                    let keys = tensor_keys(&m);
                    if !keys.is_empty() {
                        let k = &keys[pick(rng, keys.len())];
                        let entry = format!("{}:{},", json!(k), m[k]);
                        let dup = text.replacen('{', &format!("{{{entry}"), 1);
                        *b = assemble(dup.trim_end().as_bytes(), data, true);
                    }
                }
            }
        }
        12 => {
            if rng.below(2) == 0 {
                let i = pick(rng, len + 1).min(len);
                let chunk: Vec<u8> = (0..1 + pick(rng, 32))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                b.splice(i..i, chunk);
            } else if len > 0 {
                let i = pick(rng, len);
                let n = (1 + pick(rng, 32)).min(len - i);
                b.drain(i..i + n);
            }
        }
        13 => {
            let other = &seeds[pick(rng, seeds.len())];
            let i = pick(rng, len + 1).min(len);
            let j = pick(rng, other.len() + 1).min(other.len());
            b.truncate(i);
            b.extend_from_slice(&other[j..]);
        }
        15 => {
            // Many entries that cost little JSON each: the allocation worst case.
            *b = edit_header(b, rng, |m, rng| {
                let n = 1 + pick(rng, 4000);
                if rng.below(2) == 0 {
                    let meta = m.entry("__metadata__").or_insert_with(|| json!({}));
                    if let Some(meta) = meta.as_object_mut() {
                        for i in 0..n {
                            meta.insert(format!("{i:x}"), json!(""));
                        }
                    }
                } else {
                    for i in 0..n {
                        m.insert(
                            format!("{i:x}"),
                            json!({"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}),
                        );
                    }
                }
            })
        }
        16 => {
            // Unknown fields (skipped by the parser) holding bulky JSON.
            *b = edit_header(b, rng, |m, rng| {
                let n = pick(rng, 3000);
                let junk = match rng.below(4) {
                    0 => json!(vec![json!([]); n]),
                    1 => json!(vec![json!({}); n]),
                    2 => json!(vec![0; n]),
                    _ => json!("x".repeat(n)),
                };
                if let Some(t) = tensor_mut(m, rng) {
                    t.insert("junk".into(), junk);
                } else {
                    m.insert("junk".into(), junk);
                }
            })
        }
        _ => {
            *b = edit_header(b, rng, |m, rng| {
                let meta = match rng.below(5) {
                    0 => json!({"k": 1}),
                    1 => json!(["a", "b"]),
                    2 => json!(null),
                    3 => json!({"halfgrad.checksum": "0000000000000000"}),
                    _ => json!({"k": "x".repeat(pick(rng, 5000))}),
                };
                m.insert("__metadata__".into(), meta);
            })
        }
    }
}

/// Case `i`'s input and the mutation kinds applied (deterministic in (seed, i)).
fn case_input(seeds: &[Vec<u8>], seed: u64, i: u64) -> (Vec<u8>, Vec<usize>, usize) {
    let mut rng = SplitMix64::new(SplitMix64::mix(seed ^ SplitMix64::mix(i)));
    let origin = pick(&mut rng, seeds.len());
    let mut b = seeds[origin].clone();
    let mut kinds = Vec::new();
    for _ in 0..1 + pick(&mut rng, 3) {
        let kind = pick(&mut rng, KINDS.len());
        mutate_once(&mut b, kind, seeds, &mut rng);
        kinds.push(kind);
    }
    (b, kinds, origin)
}

/// Hand-made worst cases for the allocation bound, at sizes the random cases do not reach:
/// many tiny metadata entries, many zero-size tensors, maximal-rank shapes, bulky unknown
/// fields, a long name, and one large tensor.
fn directed_cases() -> Vec<(&'static str, Vec<u8>)> {
    let n = 200_000;
    let entry = |name: String, shape: &str, off: usize| {
        format!(
            r#"{}:{{"dtype":"F32","shape":{shape},"data_offsets":[{off},{off}]}}"#,
            json!(name)
        )
    };
    let tensors = |f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>().join(",");
    let meta: String = (0..n)
        .map(|i| format!(r#""{i:x}":"""#))
        .collect::<Vec<_>>()
        .join(",");
    let rank64 = format!("[{}]", vec!["0"; 64].join(","));
    let big = {
        let mut c = Checkpoint::new();
        c.push_f32("w", &[1 << 20], &vec![0.5; 1 << 20]).unwrap();
        c.to_bytes().unwrap()
    };
    vec![
        (
            "200k tiny metadata entries",
            assemble(
                format!(r#"{{"__metadata__":{{{meta}}}}}"#).as_bytes(),
                &[],
                true,
            ),
        ),
        (
            "200k zero-size tensors",
            assemble(
                format!("{{{}}}", tensors(&|i| entry(format!("{i:x}"), "[0]", 0))).as_bytes(),
                &[],
                true,
            ),
        ),
        (
            "200k rank-64 zero-size tensors",
            assemble(
                format!("{{{}}}", tensors(&|i| entry(format!("{i:x}"), &rank64, 0))).as_bytes(),
                &[],
                true,
            ),
        ),
        (
            "1M empty arrays in an unknown field",
            assemble(
                format!(
                    r#"{{"a":{{"dtype":"F32","shape":[0],"data_offsets":[0,0],"junk":[{}]}}}}"#,
                    vec!["[]"; 1_000_000].join(",")
                )
                .as_bytes(),
                &[],
                true,
            ),
        ),
        (
            "a 4 MB tensor name",
            assemble(
                format!("{{{}}}", entry("n".repeat(4 << 20), "[0]", 0)).as_bytes(),
                &[],
                true,
            ),
        ),
        ("one 4 MiB tensor", big),
    ]
}

// ---------------------------------------------------------------------------------------
// Properties

/// Checks properties 2 and 3 (and that a verified load is one of the seed checkpoints:
/// damage never loads as something nobody saved); returns whether it loaded.
fn check(bytes: &[u8], originals: &[Checkpoint]) -> Result<bool, String> {
    let typed = |what: &str, e: Error| match e {
        Error::Checkpoint { path, .. } if path == ORIGIN => Ok(()),
        other => Err(format!("{what}: unexpected error {other:?}")),
    };
    if let Err(e) = Checkpoint::from_bytes_unverified(bytes, ORIGIN) {
        typed("from_bytes_unverified", e)?;
    }
    match Checkpoint::from_bytes(bytes, ORIGIN) {
        Ok(c) => {
            let again = c.to_bytes().map_err(|e| format!("re-save failed: {e}"))?;
            let back = Checkpoint::from_bytes(&again, ORIGIN)
                .map_err(|e| format!("re-load failed: {e}"))?;
            if back != c {
                return Err("re-loaded checkpoint differs".into());
            }
            if !originals.contains(&c) {
                return Err("a damaged file loaded as a checkpoint that was never saved".into());
            }
            Ok(true)
        }
        Err(e) => typed("from_bytes", e).map(|()| false),
    }
}

/// The message of the last panic (the hook keeps it instead of printing it).
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

struct Outcome {
    loaded: bool,
    peak: usize,
}

fn run_case(bytes: &[u8], originals: &[Checkpoint]) -> Result<Outcome, String> {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let result = catch_unwind(AssertUnwindSafe(|| check(bytes, originals)));
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let loaded = match result {
        Ok(r) => r?,
        Err(_) => {
            let msg = LAST_PANIC.lock().map(|m| m.clone()).unwrap_or_default();
            return Err(format!("panicked: {msg}"));
        }
    };
    let budget = ALLOC_FACTOR * bytes.len() + ALLOC_SLACK;
    if peak > budget {
        return Err(format!(
            "peak allocation {peak} bytes for a {}-byte file exceeds {ALLOC_FACTOR} x size + {ALLOC_SLACK}",
            bytes.len()
        ));
    }
    Ok(Outcome { loaded, peak })
}

// ---------------------------------------------------------------------------------------
// Driver

struct Args {
    cases: u64,
    seed: u64,
    case: Option<u64>,
    write_seeds: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        cases: 100_000,
        seed: 0x4841_4C46_4752_4144,
        case: None,
        write_seeds: None,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<u64, String> {
        let v = v.ok_or(format!("{what} needs a value"))?;
        let v = v.replace('_', "");
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        }
        .map_err(|e| format!("{what} {v:?}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seed" => a.seed = num(it.next(), "--seed")?,
            "--case" => a.case = Some(num(it.next(), "--case")?),
            "--cases" => a.cases = num(it.next(), "--cases")?,
            "--write-seeds" => {
                a.write_seeds = Some(it.next().ok_or("--write-seeds needs a folder")?.into())
            }
            "-h" | "--help" => {
                return Err(
                    "usage: checkpoint_fuzz [CASES] [--seed S] [--case I] [--write-seeds DIR]"
                        .into(),
                )
            }
            n => a.cases = num(Some(n.to_string()), "CASES")?,
        }
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let seeds = seeds();
    if let Some(dir) = &args.write_seeds {
        std::fs::create_dir_all(dir).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}.safetensors")), s).unwrap();
        }
        println!("wrote {} seed files to {}", seeds.len(), dir.display());
        return std::process::ExitCode::SUCCESS;
    }
    let originals: Vec<Checkpoint> = seeds
        .iter()
        .map(|s| Checkpoint::from_bytes(s, ORIGIN).unwrap())
        .collect();
    for s in &seeds {
        assert!(
            matches!(run_case(s, &originals), Ok(Outcome { loaded: true, .. })),
            "seeds load"
        );
    }
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut m) = LAST_PANIC.lock() {
            *m = info.to_string();
        }
    }));

    if args.case.is_none() {
        println!("directed worst cases (peak allocation / file size):");
        for (name, bytes) in directed_cases() {
            // A directed case that is a valid checkpoint may load as itself.
            let mut known = originals.clone();
            known.extend(Checkpoint::from_bytes(&bytes, ORIGIN).ok());
            match run_case(&bytes, &known) {
                Ok(o) => println!(
                    "  {name:<40} {:>10} bytes  peak {:>11} bytes  {:>5.2} x",
                    bytes.len(),
                    o.peak,
                    o.peak as f64 / bytes.len() as f64
                ),
                Err(e) => {
                    println!("  {name}: FAILED: {e}");
                    println!("checkpoint fuzz: 0 passed, 1 failed");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
    }
    let range = match args.case {
        Some(i) => i..i + 1,
        None => 0..args.cases,
    };
    println!(
        "checkpoint fuzz: {} cases, seed {:#x}, {} seed files of {:?} bytes",
        range.end - range.start,
        args.seed,
        seeds.len(),
        seeds.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let start = Instant::now();
    let (mut loaded, mut failures, mut n) = (0u64, 0u64, 0u64);
    let mut per_kind = [(0u64, 0u64); KINDS.len()]; // (cases, loaded)
    let mut unchanged = 0u64; // mutations that happened to rebuild the seed exactly
    let (mut max_ratio, mut max_peak, mut total_bytes) = (0.0f64, 0usize, 0u64);
    let mut ratio_case = 0;
    for i in range.clone() {
        let (bytes, kinds, origin) = case_input(&seeds, args.seed, i);
        n += 1;
        unchanged += (bytes == seeds[origin]) as u64;
        total_bytes += bytes.len() as u64;
        match run_case(&bytes, &originals) {
            Ok(o) => {
                if args.case.is_some() {
                    let names: Vec<&str> = kinds.iter().map(|&k| KINDS[k]).collect();
                    println!(
                        "case {i}: seed file {origin}, mutations {names:?}, {} bytes, loaded {}, peak allocation {} bytes",
                        bytes.len(),
                        o.loaded,
                        o.peak
                    );
                }
                loaded += o.loaded as u64;
                for &k in &kinds {
                    per_kind[k].0 += 1;
                    per_kind[k].1 += o.loaded as u64;
                }
                max_peak = max_peak.max(o.peak);
                let ratio = o.peak as f64 / bytes.len().max(1) as f64;
                if ratio > max_ratio && bytes.len() >= 16 * 1024 {
                    max_ratio = ratio;
                    ratio_case = i;
                }
            }
            Err(e) => {
                failures += 1;
                let path = std::env::temp_dir().join(format!("halfgrad-fuzz-case-{i}.bin"));
                let _ = std::fs::write(&path, &bytes);
                let names: Vec<&str> = kinds.iter().map(|&k| KINDS[k]).collect();
                eprintln!(
                    "FAIL case {i} (seed file {origin}, mutations {names:?}, {} bytes, saved to {}): {e}",
                    bytes.len(),
                    path.display()
                );
                if failures >= 20 {
                    eprintln!("stopping after 20 failures");
                    break;
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("mutation kind          cases   loaded (a case counts for each kind it applied)");
    for (k, (c, l)) in KINDS.iter().zip(per_kind) {
        println!("  {k:<18} {c:>9} {l:>8}");
    }
    println!(
        "max peak allocation {max_peak} bytes; max peak / file size {max_ratio:.2} (case {ratio_case}, files >= 16 KiB); budget {ALLOC_FACTOR} x size + {ALLOC_SLACK}"
    );
    println!(
        "{n} cases ({:.1} MB parsed) in {secs:.1} s ({:.0} cases/s): {loaded} loaded ({unchanged} inputs \
         identical to their seed; the rest differ only in ignored fields, whitespace or number spelling, \
         and every load equals a seed), {} typed errors, {failures} failures",
        total_bytes as f64 / 1e6,
        n as f64 / secs,
        n - loaded - failures
    );
    if failures == 0 {
        println!("checkpoint fuzz: {n} passed, 0 failed");
        std::process::ExitCode::SUCCESS
    } else {
        println!(
            "checkpoint fuzz: {} passed, {failures} failed",
            n - failures
        );
        std::process::ExitCode::FAILURE
    }
}
