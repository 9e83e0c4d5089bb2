//! File I/O: atomic save (temp file, sync, rename, folder sync) and load.

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
        let tmp = dir.join(format!(
            ".{}.{}-{}.tmp",
            file_name.to_string_lossy(),
            std::process::id(),
            SAVE_COUNTER.fetch_add(1, Ordering::Relaxed)
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
