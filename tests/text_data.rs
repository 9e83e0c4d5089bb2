//! The shipped text corpus, the train / validation split, seeded resumable training
//! windows, the evaluation windows and the typed errors of bad texts. No GPU.

use halfgrad::data::text::{
    eval_window_count, Split, TextBatcher, TextBatcherState, TextData, KJV,
};
use halfgrad::Error;
use std::path::PathBuf;

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("halfgrad_text_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// 0, 1, 2, ... as bytes (wrapping): every window's content says where it starts.
fn counting(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

#[test]
fn kjv_is_the_documented_text() {
    assert_eq!(KJV.len(), 4_298_239);
    let mut seen = [false; 256];
    for &b in KJV {
        seen[b as usize] = true;
    }
    assert_eq!(seen.iter().filter(|&&s| s).count(), 73);
    assert!(KJV.iter().all(|&b| b == b'\n' || (32..127).contains(&b)));
    assert_eq!(KJV.iter().filter(|&&b| b == b'\n').count(), 73_811);
    assert_eq!(KJV.iter().filter(|&&b| b == b' ').count(), 814_133);
    assert!(KJV.starts_with(b"\nGenesis 1\n\n  1 In the beginning God created the heaven"));
    assert!(KJV.ends_with(b"Christ be with you all. Amen.\n"));
    let text = TextData::kjv(256).unwrap();
    assert_eq!(text.bytes(), KJV);
    assert_eq!(text.split_at(), 3_868_415);
    assert_eq!(text.split(Split::Train).len(), 3_868_415);
    assert_eq!(text.split(Split::Validation).len(), 429_824);
    assert!(text
        .split(Split::Validation)
        .starts_with(b"nd said unto me, Brother Saul"));
}

#[test]
fn split_is_the_first_90_percent_and_the_rest() {
    for (len, train) in [(100, 90), (101, 90), (109, 98), (110, 99), (1000, 900)] {
        let t = TextData::from_bytes("t", counting(len), 3).unwrap();
        assert_eq!(t.split_at(), train, "len {len}");
        assert_eq!(t.split(Split::Train), &counting(len)[..train]);
        assert_eq!(t.split(Split::Validation), &counting(len)[train..]);
    }
}

#[test]
fn eval_windows_cover_the_split_without_overlap() {
    // len 10, T 3: windows start at 0, 3, 6 (6 + 3 + 1 = 10 <= 10); 9 would need 13.
    assert_eq!(eval_window_count(10, 3), 3);
    assert_eq!(eval_window_count(9, 3), 2);
    assert_eq!(eval_window_count(4, 3), 1);
    assert_eq!(eval_window_count(3, 3), 0);
    assert_eq!(eval_window_count(0, 3), 0);
    assert_eq!(eval_window_count(5, 1), 4);
    let t = TextData::from_bytes("t", counting(100), 3).unwrap();
    // Validation = bytes 90..100: 10 bytes, 3 windows.
    assert_eq!(t.eval_window_count(Split::Validation), 3);
    assert_eq!(t.eval_window_count(Split::Train), 29); // (90 - 1) / 3
    let (mut x, mut y) = (Vec::new(), Vec::new());
    t.eval_windows(Split::Validation, 0..3, &mut x, &mut y)
        .unwrap();
    assert_eq!(x, [90, 91, 92, 93, 94, 95, 96, 97, 98]);
    assert_eq!(y, [91, 92, 93, 94, 95, 96, 97, 98, 99]);
    t.eval_windows(Split::Train, 28..29, &mut x, &mut y)
        .unwrap();
    assert_eq!(
        (x.as_slice(), y.as_slice()),
        (&[84, 85, 86][..], &[85, 86, 87][..])
    );
    t.eval_windows(Split::Train, 5..5, &mut x, &mut y).unwrap();
    assert!(x.is_empty() && y.is_empty());
    assert!(matches!(
        t.eval_windows(Split::Validation, 2..4, &mut x, &mut y),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn batches_are_seeded_windows_with_targets_one_byte_later() {
    let text = TextData::from_bytes("t", counting(2000), 7).unwrap();
    let mut b = TextBatcher::new(5, 42).unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut starts = std::collections::HashSet::new();
    for _ in 0..50 {
        b.next_batch(&text, Split::Train, &mut x, &mut y).unwrap();
        assert_eq!((x.len(), y.len()), (35, 35));
        for w in 0..5 {
            let (xi, yi) = (&x[w * 7..w * 7 + 7], &y[w * 7..w * 7 + 7]);
            for k in 0..7 {
                assert_eq!(yi[k], (xi[k] + 1) % 256, "target is the next byte");
                if k > 0 {
                    assert_eq!(xi[k], (xi[k - 1] + 1) % 256, "a window is contiguous");
                }
            }
            starts.insert(xi[0]);
        }
    }
    assert_eq!(b.step(), 50);
    assert!(
        starts.len() > 100,
        "starts spread over the split: {}",
        starts.len()
    );
    // Same seed, same batches; another seed, other batches.
    let first = |seed| {
        let mut b = TextBatcher::new(5, seed).unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        b.next_batch(&text, Split::Train, &mut x, &mut y).unwrap();
        x
    };
    assert_eq!(first(42), first(42));
    assert_ne!(first(42), first(43));
}

#[test]
fn windows_stay_inside_their_split() {
    // Bytes are 0 in the train split and 1 in validation; T = 9 and a split of exactly
    // block + 1 bytes: the only window is the whole split.
    let mut bytes = vec![0u8; 90];
    bytes.extend(vec![1u8; 10]);
    let text = TextData::from_bytes("t", bytes, 9).unwrap();
    let mut b = TextBatcher::new(3, 7).unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        b.next_batch(&text, Split::Train, &mut x, &mut y).unwrap();
        assert!(x.iter().chain(&y).all(|&v| v == 0));
        b.next_batch(&text, Split::Validation, &mut x, &mut y)
            .unwrap();
        assert!(x.iter().chain(&y).all(|&v| v == 1));
    }
}

#[test]
fn batcher_state_resumes_bit_exactly() {
    let text = TextData::kjv(64).unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut a = TextBatcher::new(4, 9).unwrap();
    for _ in 0..10 {
        a.next_batch(&text, Split::Train, &mut x, &mut y).unwrap();
    }
    let saved = a.state();
    assert_eq!(
        saved,
        TextBatcherState {
            seed: 9,
            step: 10,
            batch: 4
        }
    );
    let json = serde_json::to_string(&saved).unwrap();
    let mut b = TextBatcher::from_state(serde_json::from_str(&json).unwrap()).unwrap();
    let mut c = TextBatcher::new(4, 9).unwrap();
    c.skip_to(10);
    let (mut xb, mut yb, mut xc, mut yc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        a.next_batch(&text, Split::Train, &mut x, &mut y).unwrap();
        b.next_batch(&text, Split::Train, &mut xb, &mut yb).unwrap();
        c.next_batch(&text, Split::Train, &mut xc, &mut yc).unwrap();
        assert_eq!((&x, &y), (&xb, &yb));
        assert_eq!((&x, &y), (&xc, &yc));
    }
    // batch_at is the same pure function of the state.
    let mut xd = Vec::new();
    let mut yd = Vec::new();
    TextBatcher::batch_at(saved, &text, Split::Train, &mut xd, &mut yd).unwrap();
    let mut e = TextBatcher::from_state(saved).unwrap();
    e.next_batch(&text, Split::Train, &mut x, &mut y).unwrap();
    assert_eq!((xd, yd), (x, y));
    assert!(TextBatcher::new(0, 1).is_err());
}

#[test]
fn bad_texts_are_typed_errors() {
    assert!(matches!(
        TextData::from_bytes("t", Vec::new(), 4),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        TextData::from_bytes("t", counting(100), 0),
        Err(Error::InvalidArgument(_))
    ));
    // Block 9 needs 10 bytes in each split: 91 bytes (validation 10) is the minimum.
    assert!(TextData::from_bytes("t", counting(91), 9).is_ok());
    let e = TextData::from_bytes("short.txt", counting(90), 9).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
    let msg = e.to_string();
    assert!(
        msg.contains("short.txt") && msg.contains("at least 91 bytes"),
        "{msg}"
    );
    // A file shorter than block + 1: too short too.
    assert!(TextData::from_bytes("t", counting(5), 9).is_err());
}

#[test]
fn bad_files_are_io_errors_naming_the_file() {
    let missing = std::env::temp_dir().join("halfgrad_text_does_not_exist.txt");
    let empty = temp_file("empty.txt", b"");
    let short = temp_file("short.txt", b"hello world");
    let big = temp_file("big.txt", b"");
    // Sparse: past the limit without writing a gigabyte.
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(TextData::MAX_BYTES as u64 + 1)
        .unwrap();
    for (path, words) in [
        (&missing, "reading text"),
        (&empty, "empty"),
        (&short, "too short"),
        (&big, "larger than"),
    ] {
        let e = TextData::load(path, 8).unwrap_err();
        println!("{e}");
        match &e {
            Error::Io { path: p, message } => {
                assert_eq!(p, &path.display().to_string());
                assert!(message.contains(words), "{message}");
            }
            other => panic!("expected Error::Io, got {other:?}"),
        }
    }
    std::fs::remove_file(&big).unwrap();
    let good = temp_file("good.txt", &counting(500));
    let t = TextData::load(&good, 8).unwrap();
    assert_eq!(t.bytes(), counting(500).as_slice());
    assert_eq!(t.name(), good.display().to_string());
    assert_eq!(t.block(), 8);
}
