//! Crash safety of checkpoint saves: a child process saves two alternating checkpoints
//! (A and B) to one path in a loop and is killed with SIGKILL at random moments, 50
//! times. After every kill the file at the path must load and be byte-identical to A or
//! to B: never empty, truncated or mixed. No GPU.
//!
//! A kill inside a save leaves the save's temporary file; the next save of the path
//! removes such leftovers (exactly halfgrad's temporary names for that file, nothing
//! else), and a failed save leaves none of its own.
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
        let pid = child.id();
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
        // A temporary file of this saver left behind means the kill landed inside a
        // save. They stay: the next saver's first save removes them.
        let own = format!(".{FILE}.{pid}-");
        mid_save += temps(&dir.0).iter().any(|t| t.starts_with(&own)) as u32;
        assert!(
            temps(&dir.0).len() <= 2,
            "round {round}: leftovers pile up: {:?}",
            temps(&dir.0)
        );
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

    // The next save removes every leftover of killed saves (a dead process's name is
    // added in case the last kill landed between saves) and nothing that merely looks
    // similar.
    let dead = format!(".{FILE}.{}-0.tmp", u32::MAX);
    std::fs::write(dir.0.join(&dead), b"leftover").unwrap();
    let lookalikes = [
        format!(".{FILE}.12-3.tmp.bak"),
        format!(".{FILE}.12a-3.tmp"),
        format!(".{FILE}.12-3.temp"),
        format!(".{FILE}.-3.tmp"),
        format!("{FILE}.12-3.tmp"),
        ".other.safetensors.12-3.tmp".to_string(),
        format!(".{FILE}x.12-3.tmp"),
        "notes.tmp".to_string(),
    ];
    for (i, name) in lookalikes.iter().enumerate() {
        std::fs::write(dir.0.join(name), format!("keep {i}")).unwrap();
    }
    // A folder of the exact form is not a file halfgrad wrote: kept too.
    let folder = format!(".{FILE}.{}-1.tmp", u32::MAX);
    std::fs::create_dir(dir.0.join(&folder)).unwrap();
    b.save(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes[1]);
    assert_eq!(
        temps(&dir.0),
        vec![folder.clone()],
        "the save left temporary files"
    );
    for (i, name) in lookalikes.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(dir.0.join(name)).unwrap(),
            format!("keep {i}"),
            "{name} was touched"
        );
    }
    // A failed save leaves no temporary file of its own and the previous file intact.
    for fail_after in [0, 100, bytes[0].len() / 2] {
        assert!(a.save_failing_after(&path, fail_after).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), bytes[1]);
        assert_eq!(temps(&dir.0), vec![folder.clone()], "after a failed save");
    }
    eprintln!(
        "after the campaign: one save removed the leftovers, kept {} look-alikes; failed \
         saves left no temporary file",
        lookalikes.len() + 1
    );
}

/// The names in `dir` of halfgrad's temporary-file form for [`FILE`]: `.FILE.<pid>-<n>.tmp`.
fn temps(dir: &Path) -> Vec<String> {
    let prefix = format!(".{FILE}.");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".tmp"))
                .and_then(|r| r.split_once('-'))
                .is_some_and(|(p, k)| {
                    [p, k]
                        .iter()
                        .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                })
        })
        .collect();
    names.sort();
    names
}
