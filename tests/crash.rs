//! Crash safety of checkpoint saves: a child process saves two alternating checkpoints
//! (A and B) to one path in a loop and is killed with SIGKILL at random moments, 50
//! times. After every kill the file at the path must load and be byte-identical to A or
//! to B: never empty, truncated or mixed. No GPU.
//!
//! The saver is this test binary itself, re-run with `HALFGRAD_CRASH_SAVER=<folder>` and
//! filtered to the `saver_child` test (which returns at once in a normal run), so the
//! test needs no separately built program.

use halfgrad::checkpoint::Checkpoint;
use halfgrad::data::SplitMix64;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SAVER_ENV: &str = "HALFGRAD_CRASH_SAVER";
const FILE: &str = "model.safetensors";
/// f32 values per version: 1 MiB files, so a save takes long enough to be hit.
const VALUES: usize = 256 * 1024;

/// Version `v` (0 = A, 1 = B): different values and metadata, same names and shapes.
fn version(v: u64) -> Checkpoint {
    let mut rng = SplitMix64::new(0xC4A5 + v);
    let w: Vec<f32> = (0..VALUES).map(|_| rng.next_f32()).collect();
    let mut c = Checkpoint::new();
    c.push_f32("0.weight", &[VALUES / 256, 256], &w).unwrap();
    c.push_f32("0.bias", &[3], &[v as f32, 1.0, 2.0]).unwrap();
    c.set_meta("version", if v == 0 { "A" } else { "B" });
    c.set_meta("step", 1000 + v);
    c
}

/// The saver: in the child process only, saves B, A, B, A ... until killed.
#[test]
fn saver_child() {
    let Some(dir) = std::env::var_os(SAVER_ENV) else {
        return; // a normal test run: nothing to do
    };
    let path = Path::new(&dir).join(FILE);
    let versions = [version(0), version(1)];
    println!("saver ready");
    for i in 1u64.. {
        versions[(i % 2) as usize].save(&path).unwrap();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn sigkill_during_saves_leaves_a_complete_checkpoint() {
    let dir = TempDir(std::env::temp_dir().join(format!("halfgrad-crash-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join(FILE);
    let (a, b) = (version(0), version(1));
    let bytes = [a.to_bytes().unwrap(), b.to_bytes().unwrap()];
    // How long one save takes here (flushes make it disk-dependent): kills land within
    // the first few saves of each child whatever the machine.
    let t = Instant::now();
    for _ in 0..3 {
        a.save(&path).unwrap();
    }
    let save = t.elapsed() / 3;
    let window_us = (8 * save.as_micros() as u64).max(4_000);

    let exe = std::env::current_exe().unwrap();
    let mut rng = SplitMix64::new(0x51C4);
    let started = Instant::now();
    let (mut seen, mut mid_save) = ([0u32; 2], 0u32);
    for round in 0..50 {
        let mut child = Command::new(&exe)
            .args([
                "saver_child",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(SAVER_ENV, &dir.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the saver runs, then let it save for a random while (up to about
        // eight saves), so kills land before, inside and between saves.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.is_ok_and(|l| l.contains("saver ready"))),
            "round {round}: the saver did not start"
        );
        std::thread::sleep(Duration::from_micros(rng.below(window_us)));
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();

        let on_disk = std::fs::read(&path).unwrap();
        let which = bytes.iter().position(|b| *b == on_disk).unwrap_or_else(|| {
            panic!(
                "round {round}: the file ({} bytes) is neither version A nor B",
                on_disk.len()
            )
        });
        let loaded = Checkpoint::load(&path).unwrap();
        assert_eq!(&loaded, [&a, &b][which], "round {round}");
        seen[which] += 1;
        // A temporary file left behind means the kill landed inside a save.
        let temps: Vec<PathBuf> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "tmp"))
            .collect();
        mid_save += !temps.is_empty() as u32;
        for t in temps {
            std::fs::remove_file(t).unwrap();
        }
    }
    eprintln!(
        "50 kills in {:.1} s (one save: {:.1} ms): the file held A {} times and B {} times; \
         {mid_save} kills landed inside a save",
        started.elapsed().as_secs_f64(),
        save.as_secs_f64() * 1e3,
        seen[0],
        seen[1]
    );
    assert!(seen[1] > 0, "the saver never completed a save");
    assert!(
        mid_save > 0,
        "no kill landed inside a save; the test proved nothing"
    );
}
