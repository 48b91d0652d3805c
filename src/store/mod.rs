//! The run store: each stream of records appended to Zarr v3 arrays, one group per source and
//! record name, compressed at rest as the arrays arrived (docs/store.md). The collector writes
//! it ([`StoreSink`](crate::collector::StoreSink)); [`Store`] reads it back. `layout` is the
//! format as pure code.

pub(crate) mod layout;
mod read;

use std::fmt;
use std::path::{Path, PathBuf};

pub use layout::COLUMNS;
pub(crate) use read::{
    read_column, read_group, read_index, read_journal, read_json, subdirectories,
};
pub use read::{ArrayInfo, Group, JournalEntry, RecordReader, Store};

/// A store that cannot be read: the path concerned and what is wrong there.
#[derive(Debug)]
pub struct StoreError {
    /// The file or directory concerned.
    pub path: PathBuf,
    /// What was expected there and what was found.
    pub reason: String,
}

impl StoreError {
    pub(crate) fn new(path: &Path, reason: impl Into<String>) -> StoreError {
        StoreError {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &Path, e: std::io::Error) -> StoreError {
        StoreError::new(path, e.to_string())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for StoreError {}
