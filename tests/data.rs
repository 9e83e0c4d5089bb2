//! Embedded digits data set, the `Dataset` helpers and the seeded `Batcher`. No GPU.

use halfgrad::data::{Batcher, BatcherState, Dataset, Digits, InMemory, SplitMix64};
use halfgrad::Error;

fn raw_row(values: &[u8]) -> Vec<f32> {
    values.iter().map(|&v| v as f32 / 16.0).collect()
}

#[test]
fn digits_sizes() {
    let all = Digits::load_all().unwrap();
    assert_eq!((all.len(), all.features(), all.classes()), (1797, 64, 10));
    assert_eq!(all.inputs().len(), 1797 * 64);
    let (train, test) = Digits::load().unwrap();
    assert_eq!((train.len(), test.len()), (Digits::TRAIN, Digits::TEST));
    assert_eq!((train.len(), test.len()), (1437, 360));
    for d in [&train, &test] {
        assert_eq!((d.features(), d.classes()), (64, 10));
    }
}

#[test]
fn digits_class_counts() {
    let all = Digits::load_all().unwrap();
    let (train, test) = Digits::load().unwrap();
    assert_eq!(
        all.class_counts(),
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
    assert_eq!(
        train.class_counts(),
        [143, 146, 142, 146, 144, 145, 144, 143, 141, 143]
    );
    assert_eq!(
        test.class_counts(),
        [35, 36, 35, 37, 37, 37, 37, 36, 33, 37]
    );
}

#[test]
fn digits_pixel_range_and_known_rows() {
    let all = Digits::load_all().unwrap();
    let x = all.inputs();
    assert!(x.iter().all(|&p| (0.0..=1.0).contains(&p)));
    assert!(
        x.iter().all(|&p| (p * 16.0).fract() == 0.0),
        "pixels are k/16"
    );
    assert_eq!(x.iter().cloned().fold(f32::MIN, f32::max), 1.0);
    assert_eq!(x.iter().cloned().fold(f32::MAX, f32::min), 0.0);

    // Rows 1, 1437, 1438 and 1797 of scikit-learn's digits.csv.gz.
    let first = [
        0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0,
        0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0,
        0, 6, 13, 10, 0, 0, 0,
    ];
    assert_eq!(all.get(0), (raw_row(&first).as_slice(), 0));
    let last_train = [
        0, 0, 0, 0, 11, 15, 1, 0, 0, 0, 0, 6, 16, 16, 2, 0, 0, 3, 13, 16, 16, 16, 0, 0, 0, 9, 16,
        12, 16, 14, 0, 0, 0, 1, 3, 0, 16, 13, 0, 0, 0, 0, 0, 0, 14, 13, 0, 0, 0, 0, 0, 0, 12, 16,
        5, 0, 0, 0, 0, 0, 8, 16, 7, 0,
    ];
    let first_test = [
        0, 4, 16, 15, 2, 0, 0, 0, 0, 11, 15, 15, 7, 0, 0, 0, 0, 9, 10, 6, 14, 0, 0, 0, 0, 0, 0, 7,
        15, 0, 0, 0, 0, 0, 0, 13, 10, 0, 0, 0, 0, 0, 1, 16, 7, 2, 2, 0, 0, 1, 12, 16, 15, 16, 15,
        0, 0, 4, 16, 16, 16, 12, 11, 0,
    ];
    let last = [
        0, 0, 10, 14, 8, 1, 0, 0, 0, 2, 16, 14, 6, 1, 0, 0, 0, 0, 15, 15, 8, 15, 0, 0, 0, 0, 5, 16,
        16, 10, 0, 0, 0, 0, 12, 15, 15, 12, 0, 0, 0, 4, 16, 6, 4, 16, 6, 0, 0, 8, 16, 10, 8, 16, 8,
        0, 0, 1, 8, 12, 14, 12, 1, 0,
    ];
    let (train, test) = Digits::load().unwrap();
    assert_eq!(train.get(1436), (raw_row(&last_train).as_slice(), 1));
    assert_eq!(test.get(0), (raw_row(&first_test).as_slice(), 2));
    assert_eq!(test.get(359), (raw_row(&last).as_slice(), 8));
}

#[test]
fn digits_split_is_fixed() {
    let all = Digits::load_all().unwrap();
    let (train, test) = Digits::load().unwrap();
    let (train2, test2) = Digits::load().unwrap();
    assert_eq!((&train, &test), (&train2, &test2));
    assert_eq!(train, all.slice(0..1437).unwrap());
    assert_eq!(test, all.slice(1437..1797).unwrap());
    let (pixels, labels) = Digits::raw().unwrap();
    assert_eq!((pixels.len(), labels.len()), (1797 * 64, 1797));
}

#[test]
fn in_memory_validates() {
    let ok = InMemory::new(vec![0.0; 6], vec![0, 2], 3, 3).unwrap();
    assert_eq!(ok.len(), 2);
    assert!(matches!(
        InMemory::new(vec![0.0; 6], vec![0, 3], 3, 3),
        Err(Error::LabelOutOfRange {
            index: 1,
            label: 3,
            classes: 3
        })
    ));
    assert!(matches!(
        InMemory::new(vec![0.0; 5], vec![0, 1], 3, 3),
        Err(Error::DataLength { .. })
    ));
    assert!(InMemory::new(vec![], vec![], 0, 3).is_err());
    assert!(ok.slice(1..3).is_err());
    let (mut x, mut y) = (vec![], vec![]);
    assert!(matches!(
        ok.gather(&[1, 2], &mut x, &mut y),
        Err(Error::InvalidArgument(_))
    ));
    ok.gather(&[1, 0, 1], &mut x, &mut y).unwrap();
    assert_eq!((x.len(), y.as_slice()), (9, &[2, 0, 2][..]));
}

#[test]
fn splitmix64_reference_values() {
    // Outputs of the reference splitmix64.c seeded with 0.
    let mut r = SplitMix64::new(0);
    assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    let mut counts = [0u32; 3];
    for _ in 0..30_000 {
        counts[r.below(3) as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| (9_500..10_500).contains(&c)),
        "{counts:?}"
    );
    assert!((0..1000)
        .map(|_| r.next_f32())
        .all(|v| (0.0..1.0).contains(&v)));
}

/// The first `n` batches of a fresh batcher.
fn batches(len: usize, batch: usize, seed: u64, n: usize) -> Vec<Vec<usize>> {
    let mut b = Batcher::new(len, batch, seed).unwrap();
    (0..n).map(|_| b.next_indices().to_vec()).collect()
}

#[test]
fn batcher_covers_each_epoch_once() {
    let (len, batch) = (37, 5);
    let stream: Vec<usize> = batches(len, batch, 7, 37).concat(); // 185 samples = 5 epochs
    assert_eq!(stream.len(), 5 * len);
    for (e, epoch) in stream.chunks(len).enumerate() {
        let mut sorted = epoch.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..len).collect::<Vec<_>>(), "epoch {e}");
        assert_eq!(epoch, Batcher::epoch_permutation(len, 7, e as u64));
    }
    // Different epochs are shuffled differently.
    assert_ne!(stream[..len], stream[len..2 * len]);
}

#[test]
fn batcher_is_deterministic() {
    assert_eq!(batches(100, 16, 42, 20), batches(100, 16, 42, 20));
    assert_ne!(batches(100, 16, 42, 20), batches(100, 16, 43, 20));
    let fresh = batches(1437, 64, 0, 1);
    assert_ne!(
        fresh[0],
        (0..64).collect::<Vec<_>>(),
        "shuffled, not in order"
    );
}

#[test]
fn batcher_resume_equivalence() {
    let (len, batch, seed) = (33, 7, 1234);
    let reference = batches(len, batch, seed, 40);
    for k in [0usize, 1, 4, 5, 13, 39] {
        let mut skipped = Batcher::new(len, batch, seed).unwrap();
        skipped.skip_to(k as u64).unwrap();
        assert_eq!(skipped.step(), k as u64);
        let rest: Vec<Vec<usize>> = (k..40).map(|_| skipped.next_indices().to_vec()).collect();
        assert_eq!(rest, reference[k..], "skip_to({k})");

        // Resume from a saved state, as a checkpoint would.
        let mut original = Batcher::new(len, batch, seed).unwrap();
        for _ in 0..k {
            original.next_indices();
        }
        let state: BatcherState = original.state();
        assert_eq!(state.position, (k * batch) as u64);
        assert_eq!(
            (original.epoch(), original.index_in_epoch()),
            (((k * batch) / len) as u64, (k * batch) % len)
        );
        let mut resumed = Batcher::from_state(state).unwrap();
        let rest: Vec<Vec<usize>> = (k..40).map(|_| resumed.next_indices().to_vec()).collect();
        assert_eq!(rest, reference[k..], "from_state after {k}");
    }
    // skip_to also goes backwards.
    let mut b = Batcher::new(len, batch, seed).unwrap();
    for _ in 0..10 {
        b.next_indices();
    }
    b.skip_to(2).unwrap();
    assert_eq!(b.next_indices(), reference[2].as_slice());
}

#[test]
fn batcher_fills_batches_from_a_dataset() {
    let (train, _) = Digits::load().unwrap();
    let mut b = Batcher::new(train.len(), 64, 5).unwrap();
    let mut twin = b.clone();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        // 30 * 64 > 1437: crosses an epoch boundary, still full batches.
        b.next_batch(&train, &mut x, &mut y).unwrap();
        assert_eq!((x.len(), y.len()), (64 * 64, 64));
        let idx = twin.next_indices().to_vec();
        for (row, &i) in idx.iter().enumerate() {
            let (features, label) = train.get(i);
            assert_eq!(&x[row * 64..(row + 1) * 64], features);
            assert_eq!(y[row], label);
        }
    }
    let (_, test) = Digits::load().unwrap();
    assert!(matches!(
        b.next_batch(&test, &mut x, &mut y),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn batcher_rejects_bad_arguments() {
    assert!(Batcher::new(0, 1, 0).is_err());
    assert!(Batcher::new(10, 0, 0).is_err());
    assert!(Batcher::new(10, 11, 0).is_err());
    assert!(Batcher::new(10, 10, 0).is_ok());
    let mut b = Batcher::new(10, 3, 0).unwrap();
    assert!(b.skip_to(u64::MAX).is_err());
}
