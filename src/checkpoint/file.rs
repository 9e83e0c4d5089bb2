//! File I/O: atomic save (temp file, sync, rename, folder sync) and load.
//!
//! The temporary file of a save of `DIR/NAME` is `DIR/.NAME.<pid>-<n>.tmp` ([`temp_name`]).
//! A process killed mid-save leaves it behind; the next save of the same path removes
//! such leftovers ([`remove_stale_temps`]): only names of exactly that form, for that
//! NAME, of another process that is not running (on Linux; elsewhere of any other
//! process), never anything else.

use super::Checkpoint;
use crate::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
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

impl Checkpoint {
    /// Writes the checkpoint to `path` atomically: temp file in the same folder,
    /// `sync_all`, rename over `path`, then sync the folder (unix). On failure the
    /// previous file at `path` is untouched and the temp file is removed.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, |file, bytes| file.write_all(bytes))
    }

    /// Test hook: like [`Checkpoint::save`], but the write fails with an I/O error
    /// after `fail_after` bytes, to check that a failed save leaves no trace.
    #[doc(hidden)]
    pub fn save_failing_after(&self, path: &Path, fail_after: usize) -> Result<()> {
        self.save_with(path, |file, bytes| {
            file.write_all(&bytes[..fail_after.min(bytes.len())])?;
            Err(io::Error::other("injected write failure"))
        })
    }

    fn save_with(
        &self,
        path: &Path,
        write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
    ) -> Result<()> {
        // Serialise first: a checkpoint that cannot be encoded never touches disk.
        let bytes = self.to_bytes()?;
        let file_name = path.file_name().ok_or_else(|| Error::Io {
            path: path.display().to_string(),
            message: "not a file path".into(),
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let file_name = file_name.to_string_lossy();
        remove_stale_temps(dir, &file_name);
        let tmp = dir.join(temp_name(
            &file_name,
            std::process::id(),
            SAVE_COUNTER.fetch_add(1, Ordering::Relaxed),
        ));
        // create_new: never truncate a file that is not ours.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, "creating temporary file", e))?;
        let written = write(&mut file, &bytes)
            .map_err(|e| io_err(&tmp, "writing", e))
            .and_then(|()| file.sync_all().map_err(|e| io_err(&tmp, "flushing", e)));
        drop(file);
        let renamed = written.and_then(|()| {
            fs::rename(&tmp, path).map_err(|e| io_err(path, "replacing with the new file", e))
        });
        if let Err(e) = renamed {
            // Best effort: the original error is the one worth reporting.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(dir)
    }

    /// Reads and parses a checkpoint file; errors name `path`.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = fs::read(path).map_err(|e| io_err(path, "reading", e))?;
        Checkpoint::from_bytes(&bytes, &path.display().to_string())
    }

    /// Reads any safetensors file (see [`Checkpoint::from_bytes_unverified`]).
    pub fn load_unverified(path: &Path) -> Result<Checkpoint> {
        let bytes = fs::read(path).map_err(|e| io_err(path, "reading", e))?;
        Checkpoint::from_bytes_unverified(&bytes, &path.display().to_string())
    }
}

/// The temporary file name of save number `n` of process `pid` to a file named `name`.
fn temp_name(name: &str, pid: u32, n: u64) -> String {
    format!(".{name}.{pid}-{n}.tmp")
}

/// The process id in `entry` when it is a [`temp_name`] of a save to `name`, exactly:
/// `.` `name` `.` digits `-` digits `.tmp`.
fn temp_owner(entry: &str, name: &str) -> Option<u32> {
    let middle = entry
        .strip_prefix('.')?
        .strip_prefix(name)?
        .strip_prefix('.')?
        .strip_suffix(".tmp")?;
    let (pid, n) = middle.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(pid) && digits(n)) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` may still be saving: this process (another thread's save), or
/// on Linux any running process (a concurrent save of the same path).
fn may_be_saving(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        Path::new("/proc").join(pid.to_string()).exists()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Removes the temporary files that killed saves to `dir/name` left (best effort: a
/// folder that cannot be listed or a file that cannot be removed is left as it is; the
/// save itself does not depend on it). Only regular files of the exact [`temp_name`]
/// form whose process is gone are touched.
fn remove_stale_temps(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|e| temp_owner(e, name)) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && !may_be_saving(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Makes the rename durable: a folder's entries are flushed by syncing the folder.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, "flushing folder", e))
}

/// Windows cannot open a folder as a file; rename there is already journaled.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_temp_names_of_that_file_match() {
        let name = "model.safetensors";
        assert_eq!(temp_owner(&temp_name(name, 42, 7), name), Some(42));
        for other in [
            "model.safetensors",
            ".model.safetensors.tmp",
            ".model.safetensors.42-7.tmp.bak",
            ".model.safetensors.42-.tmp",
            ".model.safetensors.-7.tmp",
            ".model.safetensors.4a-7.tmp",
            ".model.safetensors.42_7.tmp",
            ".model.safetensors.42-7-1.tmp",
            "model.safetensors.42-7.tmp",
            ".other.safetensors.42-7.tmp",
            ".model.safetensors.x.42-7.tmp",
            "..model.safetensors.42-7.tmp",
        ] {
            assert_eq!(temp_owner(other, name), None, "{other}");
        }
        // A save of `a` never matches the temp of `a.1-2` and the reverse.
        assert_eq!(temp_owner(&temp_name("a.1-2", 5, 6), "a"), None);
        assert_eq!(temp_owner(&temp_name("a", 5, 6), "a.5"), None);
    }
}
