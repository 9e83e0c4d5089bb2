//! Checkpoint container: exact round trips, safetensors compatibility, typed errors on
//! every kind of damage, atomic saves, and a no-panic property test. No GPU.

use halfgrad::checkpoint::{Checkpoint, NamedTensor, CHECKSUM_KEY};
use halfgrad::data::SplitMix64;
use halfgrad::{DType, Error};
use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const ORIGIN: &str = "test.safetensors";

/// f32 values with awkward bit patterns: NaN payloads, -0, infinities, subnormals.
fn awkward_f32(n: usize, seed: u64) -> Vec<f32> {
    let specials = [
        f32::from_bits(0x7FC0_1234), // quiet NaN with payload
        f32::from_bits(0xFF80_0001), // signalling NaN, negative
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(1), // smallest subnormal
        f32::MAX,
    ];
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            specials
                .get(i)
                .copied()
                .unwrap_or_else(|| rng.next_f32() * 2.0 - 1.0)
        })
        .collect()
}

fn sample() -> Checkpoint {
    let mut c = Checkpoint::new();
    c.push_f32("0.weight", &[5, 3], &awkward_f32(15, 1))
        .unwrap();
    c.push_f32("0.bias", &[5], &awkward_f32(5, 2)).unwrap();
    c.push(NamedTensor::encode("emb.f16", &[2, 3], DType::F16, &awkward_f32(6, 3)).unwrap())
        .unwrap();
    c.push(NamedTensor::encode("b.bf16", &[3], DType::BF16, &awkward_f32(3, 4)).unwrap())
        .unwrap();
    c.push_f32("scale", &[], &[65536.0]).unwrap();
    c.push_f32("empty", &[0, 4], &[]).unwrap();
    c.set_meta("step", 17);
    c.set_meta("precision", "bf16");
    c.set_meta("unicode ✓ \"quoted\"", "a\nb");
    c
}

fn is_checkpoint_err<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Checkpoint { path, .. }) if path == ORIGIN)
}

/// A fresh folder under the system temp dir, removed by the guard's drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("halfgrad-ckpt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn round_trip_exact_bits() {
    let c = sample();
    let bytes = c.to_bytes().unwrap();
    assert_eq!(bytes, c.to_bytes().unwrap(), "deterministic bytes");
    let back = Checkpoint::from_bytes(&bytes, ORIGIN).unwrap();
    // PartialEq compares raw bytes, so NaN payloads and -0 must survive exactly.
    assert_eq!(back, c);
    let names: Vec<&str> = back.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["0.weight", "0.bias", "emb.f16", "b.bf16", "scale", "empty"]
    );
    assert!(!back.metadata.contains_key(CHECKSUM_KEY));
    assert_eq!(back.origin(), ORIGIN);
    assert_eq!(
        back.to_bytes().unwrap(),
        bytes,
        "re-encoding gives the same file"
    );

    let w = back.get_f32("0.weight", &[5, 3]).unwrap();
    let expected = awkward_f32(15, 1);
    assert_eq!(
        w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(back.get_f32("scale", &[]).unwrap(), [65536.0]);
    assert_eq!(back.get_f32("empty", &[0, 4]).unwrap(), Vec::<f32>::new());
    assert_eq!(back.meta_parse::<u64>("step").unwrap(), 17);
    back.expect_meta("precision", "bf16").unwrap();
    let f16 = back.tensor("emb.f16").unwrap().to_f32().unwrap();
    let want: Vec<f32> = awkward_f32(6, 3)
        .iter()
        .map(|&v| DType::F16.round(v))
        .collect();
    assert_eq!(format!("{f16:?}"), format!("{want:?}"));

    // An empty checkpoint round-trips too.
    let empty = Checkpoint::new();
    assert_eq!(
        Checkpoint::from_bytes(&empty.to_bytes().unwrap(), ORIGIN).unwrap(),
        empty
    );
}

/// Lets the safetensors crate serialise our tensors, to check interoperability.
struct View<'a>(&'a NamedTensor);

impl safetensors::View for View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.0.dtype.safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0.data)
    }
    fn data_len(&self) -> usize {
        self.0.data.len()
    }
}

#[test]
fn compatible_with_the_safetensors_crate() {
    let c = sample();
    // Ours -> theirs.
    let bytes = c.to_bytes().unwrap();
    let theirs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(theirs.len(), c.tensors.len());
    for t in &c.tensors {
        let v = theirs.tensor(&t.name).unwrap();
        assert_eq!(
            (v.dtype(), v.shape(), v.data()),
            (t.dtype.safetensors(), &t.shape[..], &t.data[..])
        );
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["step"], "17");
    assert!(meta.contains_key(CHECKSUM_KEY));

    // Theirs -> ours: no checksum, so only the unverified reader accepts it.
    let info = c.metadata.clone().into_iter().collect();
    let foreign = safetensors::serialize(
        c.tensors.iter().map(|t| (t.name.clone(), View(t))),
        Some(info),
    )
    .unwrap();
    assert!(is_checkpoint_err(&Checkpoint::from_bytes(&foreign, ORIGIN)));
    let loaded = Checkpoint::from_bytes_unverified(&foreign, ORIGIN).unwrap();
    assert_eq!(loaded.metadata, c.metadata);
    for t in &c.tensors {
        assert_eq!(loaded.tensor(&t.name).unwrap(), t);
    }
}

#[test]
fn truncated_at_every_length_is_an_error() {
    let bytes = sample().to_bytes().unwrap();
    for len in 0..bytes.len() {
        let r = Checkpoint::from_bytes(&bytes[..len], ORIGIN);
        assert!(is_checkpoint_err(&r), "length {len}: {r:?}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(is_checkpoint_err(&Checkpoint::from_bytes(&longer, ORIGIN)));
}

#[test]
fn every_single_byte_flip_is_an_error() {
    let bytes = sample().to_bytes().unwrap();
    for pos in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut damaged = bytes.clone();
            damaged[pos] ^= mask;
            let r = Checkpoint::from_bytes(&damaged, ORIGIN);
            assert!(is_checkpoint_err(&r), "byte {pos} ^ {mask:#x}: {r:?}");
        }
    }
}

/// A hand-made safetensors file: header JSON (padded) followed by `data_len` zeros.
fn craft(header: &str, data_len: usize) -> Vec<u8> {
    let mut json = header.as_bytes().to_vec();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes.resize(bytes.len() + data_len, 0);
    bytes
}

#[test]
fn malformed_headers_are_errors() {
    let big = 1usize << 61;
    let near_max: String = (0..8)
        .map(|i| {
            format!(
                r#""t{i}":{{"dtype":"U8","shape":[{}],"data_offsets":[{},{}]}}"#,
                big - 1,
                i * (big - 1),
                (i + 1) * (big - 1)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", vec![]),
        ("header length only", 8u64.to_le_bytes().to_vec()),
        ("header length u64::MAX", {
            let mut b = craft("{}", 0);
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        ("header length past the end", {
            let mut b = craft("{}", 0);
            b[..8].copy_from_slice(&9u64.to_le_bytes());
            b
        }),
        ("zero header length", 0u64.to_le_bytes().to_vec()),
        ("not JSON", craft("hello", 0)),
        ("JSON array", craft("[1,2,3]", 0)),
        ("invalid UTF-8", {
            let mut b = craft("{\"a\":1}", 0);
            b[9] = 0xC3;
            b
        }),
        (
            "deep nesting",
            craft(
                &format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000)),
                0,
            ),
        ),
        (
            "overlapping offsets",
            craft(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
                24,
            ),
        ),
        (
            "gap before first tensor",
            craft(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
            ),
        ),
        (
            "offsets reversed",
            craft(
                r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}"#,
                4,
            ),
        ),
        (
            "huge offsets",
            craft(
                r#"{"a":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,9223372036854775808]}}"#,
                16,
            ),
        ),
        (
            "offsets near usize::MAX",
            craft(&format!("{{{near_max}}}"), 16),
        ),
        (
            "shape product overflows",
            craft(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#,
                0,
            ),
        ),
        (
            "negative shape",
            craft(
                r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                4,
            ),
        ),
        (
            "shape disagrees with offsets",
            craft(
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
                16,
            ),
        ),
        (
            "data shorter than offsets",
            craft(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                12,
            ),
        ),
        (
            "data longer than offsets",
            craft(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                20,
            ),
        ),
        (
            "unknown dtype",
            craft(
                r#"{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
        ),
        (
            "unsupported dtype I64",
            craft(
                r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
                8,
            ),
        ),
        (
            "unsupported dtype F64",
            craft(
                r#"{"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#,
                16,
            ),
        ),
        (
            "sub-byte dtype",
            craft(
                r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#,
                1,
            ),
        ),
        (
            "metadata not strings",
            craft(r#"{"__metadata__":{"a":1}}"#, 0),
        ),
        ("missing fields", craft(r#"{"a":{"dtype":"F32"}}"#, 0)),
        (
            "valid but no checksum",
            craft(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
        ),
        (
            "wrong checksum",
            craft(
                r#"{"__metadata__":{"halfgrad.checksum":"0000000000000000"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
        ),
    ];
    for (what, bytes) in &cases {
        let r = Checkpoint::from_bytes(bytes, ORIGIN);
        assert!(is_checkpoint_err(&r), "{what}: {r:?}");
        if *what != "valid but no checksum" && *what != "wrong checksum" {
            let r = Checkpoint::from_bytes_unverified(bytes, ORIGIN);
            assert!(is_checkpoint_err(&r), "{what} (unverified): {r:?}");
        }
    }
}

#[test]
fn mismatched_names_shapes_dtypes_and_metadata_are_errors() {
    let c = Checkpoint::from_bytes(&sample().to_bytes().unwrap(), ORIGIN).unwrap();
    assert!(is_checkpoint_err(&c.get_f32("1.weight", &[5, 3])));
    assert!(is_checkpoint_err(&c.get_f32("0.weight", &[3, 5])));
    assert!(is_checkpoint_err(&c.get_f32("0.weight", &[15])));
    assert!(
        is_checkpoint_err(&c.get_f32("emb.f16", &[2, 3])),
        "f16 is not f32"
    );
    assert!(is_checkpoint_err(&c.tensor("nope")));
    assert!(is_checkpoint_err(&c.meta("nope")));
    assert!(is_checkpoint_err(&c.expect_meta("precision", "f16")));
    assert!(is_checkpoint_err(&c.meta_parse::<u32>("precision")));
    let all = ["0.weight", "0.bias", "emb.f16", "b.bf16", "scale", "empty"];
    c.expect_names(&all).unwrap();
    assert!(
        is_checkpoint_err(&c.expect_names(&all[1..])),
        "extra tensor"
    );
    assert!(
        is_checkpoint_err(&c.expect_names(&[&all[..], &["more"]].concat())),
        "missing tensor"
    );

    // Building bad checkpoints fails early.
    let mut b = Checkpoint::new();
    b.push_f32("x", &[2], &[1.0, 2.0]).unwrap();
    assert!(matches!(
        b.push_f32("x", &[1], &[1.0]),
        Err(Error::Checkpoint { .. })
    ));
    assert!(matches!(
        b.push_f32("y", &[3], &[1.0]),
        Err(Error::DataLength { .. })
    ));
    assert!(matches!(
        b.push_f32("__metadata__", &[1], &[1.0]),
        Err(Error::Checkpoint { .. })
    ));
    assert!(matches!(
        b.push_f32("", &[1], &[1.0]),
        Err(Error::Checkpoint { .. })
    ));
    // Public fields can be filled with nonsense; to_bytes refuses it.
    let mut raw = b.clone();
    raw.tensors.push(raw.tensors[0].clone());
    assert!(
        matches!(raw.to_bytes(), Err(Error::Checkpoint { .. })),
        "duplicate"
    );
    let mut raw = b.clone();
    raw.tensors[0].data.pop();
    assert!(
        matches!(raw.to_bytes(), Err(Error::Checkpoint { .. })),
        "short data"
    );
    let mut raw = b.clone();
    raw.tensors[0].shape = vec![usize::MAX, 2];
    assert!(
        matches!(raw.to_bytes(), Err(Error::Checkpoint { .. })),
        "overflowing shape"
    );
}

#[test]
fn save_and_load_files() {
    let dir = TempDir::new("roundtrip");
    let path = dir.0.join("model.safetensors");
    let c = sample();
    c.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.origin(), path.display().to_string());
    // Overwrite with different contents.
    let mut c2 = c.clone();
    c2.set_meta("step", 18);
    c2.save(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap(), c2);
    assert_eq!(dir.entries(), ["model.safetensors"], "no temp files left");
    assert_eq!(
        Checkpoint::load_unverified(&path)
            .unwrap()
            .meta("step")
            .unwrap(),
        "18"
    );

    let missing = dir.0.join("missing.safetensors");
    assert!(matches!(Checkpoint::load(&missing), Err(Error::Io { .. })));
    // A damaged file names its path.
    std::fs::write(&missing, b"not a checkpoint").unwrap();
    let r = Checkpoint::load(&missing);
    assert!(
        matches!(&r, Err(Error::Checkpoint { path, .. }) if Path::new(path) == missing),
        "{r:?}"
    );
}

#[test]
fn failed_saves_leave_the_previous_file_intact() {
    let dir = TempDir::new("failed");
    let path = dir.0.join("model.safetensors");
    let old = sample();
    old.save(&path).unwrap();
    let old_bytes = std::fs::read(&path).unwrap();
    let mut new = old.clone();
    new.set_meta("step", 99);

    // A write that fails part-way (0 bytes, some bytes, all bytes then an error).
    for fail_after in [0, 5, 100, usize::MAX] {
        let r = new.save_failing_after(&path, fail_after);
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
        assert_eq!(std::fs::read(&path).unwrap(), old_bytes);
        assert_eq!(dir.entries(), ["model.safetensors"], "temp file removed");
    }

    // Parent is a regular file: the temp file cannot even be created.
    let r = new.save(&path.join("inner.safetensors"));
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    assert_eq!(std::fs::read(&path).unwrap(), old_bytes);

    // Target is a non-empty folder: the rename fails after a complete write.
    let folder = dir.0.join("folder.safetensors");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("keep"), b"x").unwrap();
    let r = new.save(&folder);
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    assert!(folder.join("keep").exists());
    assert_eq!(
        dir.entries(),
        ["folder.safetensors", "model.safetensors"],
        "temp file removed"
    );

    // A checkpoint that cannot be encoded never touches the disk.
    let mut bad = old.clone();
    bad.tensors[0].data.pop();
    assert!(matches!(bad.save(&path), Err(Error::Checkpoint { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), old_bytes);
    assert_eq!(dir.entries(), ["folder.safetensors", "model.safetensors"]);

    // And the good save still works afterwards.
    new.save(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap(), new);
}

/// One random mutation of `bytes`: flips, overwrites, truncation, insertion, deletion,
/// a random header length, or a duplicated chunk.
fn mutate(bytes: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let pick = |rng: &mut SplitMix64, n: usize| rng.below(n.max(1) as u64) as usize;
    for _ in 0..1 + pick(rng, 3) {
        match rng.below(8) {
            0 => {
                let i = pick(rng, b.len());
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
            1 => {
                let i = pick(rng, b.len());
                if let Some(x) = b.get_mut(i) {
                    *x = rng.next_u64() as u8;
                }
            }
            2 => b.truncate(pick(rng, b.len())),
            3 => {
                let i = pick(rng, b.len() + 1).min(b.len());
                let alphabet = b"{}[]\",:0123456789eE-.\\ ";
                b.insert(i, alphabet[pick(rng, alphabet.len())]);
            }
            4 => {
                if !b.is_empty() {
                    let i = pick(rng, b.len());
                    b.remove(i);
                }
            }
            5 => {
                if b.len() >= 8 {
                    let n = match rng.below(3) {
                        0 => rng.next_u64(),
                        1 => rng.below(b.len() as u64 + 16),
                        _ => u64::MAX - rng.below(16),
                    };
                    b[..8].copy_from_slice(&n.to_le_bytes());
                }
            }
            6 => {
                // Replace a digit run in the header with a huge number.
                let i = pick(rng, b.len());
                if let Some(j) = b[i..].iter().position(|c| c.is_ascii_digit()) {
                    let at = i + j;
                    let end = b[at..]
                        .iter()
                        .position(|c| !c.is_ascii_digit())
                        .map_or(b.len(), |k| at + k);
                    let big = [
                        "18446744073709551615",
                        "9223372036854775808",
                        "4294967296",
                        "0",
                        "1",
                    ];
                    b.splice(at..end, big[pick(rng, big.len())].bytes());
                }
            }
            _ => {
                let i = pick(rng, b.len());
                let n = pick(rng, 16).min(b.len() - i.min(b.len()));
                let chunk = b[i..i + n].to_vec();
                b.splice(i..i, chunk);
            }
        }
    }
    b
}

#[test]
fn ten_thousand_mutated_files_never_panic() {
    let originals = [
        sample().to_bytes().unwrap(),
        Checkpoint::new().to_bytes().unwrap(),
        {
            let mut c = Checkpoint::new();
            c.push_f32("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
            c.to_bytes().unwrap()
        },
    ];
    let mut rng = SplitMix64::new(0x5EED);
    let (mut ok, mut err) = (0, 0);
    for i in 0..10_000 {
        let original = &originals[i % originals.len()];
        let damaged = mutate(original, &mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            (
                Checkpoint::from_bytes(&damaged, ORIGIN),
                Checkpoint::from_bytes_unverified(&damaged, ORIGIN).map(|_| ()),
            )
        }));
        let (verified, unverified) =
            outcome.unwrap_or_else(|_| panic!("mutation {i} panicked: {damaged:?}"));
        assert!(
            unverified.is_ok() || is_checkpoint_err(&unverified),
            "mutation {i}"
        );
        match verified {
            // Only a mutation that rebuilt the very same file (or one that changed
            // only the JSON padding) may load, and then it must load the original.
            Ok(c) => {
                assert_eq!(
                    c,
                    Checkpoint::from_bytes(original, ORIGIN).unwrap(),
                    "mutation {i}"
                );
                ok += 1;
            }
            Err(Error::Checkpoint { .. }) => err += 1,
            Err(e) => panic!("mutation {i}: unexpected error type {e:?}"),
        }
    }
    assert_eq!(ok + err, 10_000);
    assert!(err > 9_000, "{ok} mutated files loaded");
}

#[test]
fn zero_size_tensors_sharing_an_offset_load_every_time() {
    // Their order cannot be recorded in a key-sorted header; they load by name and the
    // checksum is computed in that order, so the load never depends on hashing.
    let mut c = Checkpoint::new();
    c.push_f32("w", &[1], &[1.0]).unwrap();
    c.push_f32("zb", &[0], &[]).unwrap();
    c.push_f32("za", &[0, 2], &[]).unwrap();
    c.push_f32("x", &[1], &[2.0]).unwrap();
    let bytes = c.to_bytes().unwrap();
    for _ in 0..20 {
        let loaded = Checkpoint::from_bytes(&bytes, ORIGIN).unwrap();
        let names: Vec<&str> = loaded.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w", "za", "zb", "x"]);
    }
}

#[test]
fn ambiguous_or_oversized_headers_are_errors() {
    let entry = r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
    let rank = |r: usize| {
        let shape = vec!["1"; r].join(",");
        craft(
            &format!(r#"{{"a":{{"dtype":"F32","shape":[{shape}],"data_offsets":[0,4]}}}}"#),
            4,
        )
    };
    let cases = [
        (
            "a name twice",
            craft(&format!(r#"{{"a":{entry},"a":{entry}}}"#), 4),
        ),
        (
            "__metadata__ twice",
            craft(r#"{"__metadata__":{},"__metadata__":{}}"#, 0),
        ),
        (
            "rank past MAX_RANK",
            rank(halfgrad::checkpoint::MAX_RANK + 1),
        ),
    ];
    for (what, bytes) in cases {
        let r = Checkpoint::from_bytes_unverified(&bytes, ORIGIN);
        assert!(is_checkpoint_err(&r), "{what}: {r:?}");
    }
    assert!(
        Checkpoint::from_bytes_unverified(&rank(halfgrad::checkpoint::MAX_RANK), ORIGIN).is_ok()
    );
    // Unknown fields of an entry are ignored (other writers add their own).
    let extra = craft(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"note":[[],{}]}}"#,
        4,
    );
    assert_eq!(
        Checkpoint::from_bytes_unverified(&extra, ORIGIN)
            .unwrap()
            .tensors[0]
            .shape,
        [1]
    );
}

#[test]
fn u32_tensors_round_trip_exactly() {
    use halfgrad::checkpoint::TensorDType;
    use halfgrad::optim::StateTensor;
    let mut c = Checkpoint::new();
    let counters = [0u32, 1, 16_777_217, u32::MAX, 0x7FC0_0001];
    c.push_u32("optim.step", &[5], &counters).unwrap();
    c.push_f32("w", &[2], &[1.5, -0.0]).unwrap();
    let bytes = c.to_bytes().unwrap();
    let back = Checkpoint::from_bytes(&bytes, ORIGIN).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.get_u32("optim.step", &[5]).unwrap(), counters);
    assert_eq!(back.tensor("optim.step").unwrap().dtype, TensorDType::U32);
    // Type confusion is an error either way.
    assert!(is_checkpoint_err(&back.get_f32("optim.step", &[5])));
    assert!(is_checkpoint_err(&back.get_u32("w", &[2])));
    assert!(is_checkpoint_err(&back.get_u32("optim.step", &[4])));
    assert!(back.tensor("optim.step").unwrap().to_f32().is_err());
    // The safetensors crate reads it as U32.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor("optim.step").unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::U32);
    // State tensors convert both ways with their bits.
    let state = back.tensor("optim.step").unwrap().to_state().unwrap();
    assert_eq!(
        state,
        StateTensor::u32("optim.step", &[5], counters.to_vec())
    );
    assert_eq!(
        NamedTensor::from_state(&state).unwrap(),
        *back.tensor("optim.step").unwrap()
    );
    // A flipped bit in u32 data is caught by the checksum.
    let mut damaged = bytes.clone();
    let last = damaged.len() - 9; // inside the u32 tensor's bytes (stored first)
    damaged[last] ^= 1;
    let r = Checkpoint::from_bytes(&damaged, ORIGIN);
    assert!(is_checkpoint_err(&r), "{r:?}");
}
