//! One output file shared by several workers' sinks.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::SinkError;

/// Whether opening an output file keeps or discards what is already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FileMode {
    /// Start empty (a fresh demo run).
    #[default]
    Truncate,
    /// Keep existing lines and add after them (a resumed run).
    Append,
}

/// A buffered file behind a mutex; clones share the same file.
///
/// Why one file for all workers: users look in one place for the DLQ/raw log.
/// Sinks serialize outside the lock and lock once per batch, so contention stays low.
#[derive(Clone, Debug)]
pub struct SharedFile {
    path: Arc<PathBuf>,
    inner: Arc<Mutex<BufWriter<File>>>,
}

impl SharedFile {
    /// Opens (creating parent directories) `path` for writing.
    pub fn open(path: impl AsRef<Path>, mode: FileMode) -> Result<Self, SinkError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| SinkError::Open { path: path.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let mut opts = OpenOptions::new();
        match mode {
            FileMode::Truncate => opts.write(true).create(true).truncate(true),
            FileMode::Append => opts.append(true).create(true),
        };
        let file = opts.open(&path).map_err(open_err)?;
        Ok(SharedFile {
            path: Arc::new(path),
            // 64 KiB gathers small lines (DLQ). A raw-log batch line (~1000
            // rows, ~400 KB) is larger, so BufWriter hands it to the OS in one
            // write instead of copying it into the buffer first.
            inner: Arc::new(Mutex::new(BufWriter::with_capacity(64 << 10, file))),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes` (whole lines) under one lock acquisition.
    pub fn write_all(&self, bytes: &[u8]) -> Result<(), SinkError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.lock()?.write_all(bytes)?;
        Ok(())
    }

    /// Pushes buffered bytes to the OS so readers (and a restart after kill -9) see them.
    pub fn flush(&self) -> Result<(), SinkError> {
        self.lock()?.flush()?;
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, BufWriter<File>>, SinkError> {
        self.inner.lock().map_err(|_| SinkError::Poisoned("shared_file"))
    }
}
