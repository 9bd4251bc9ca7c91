//! Reading one manifest file: regular files only, never past
//! [`MAX_MANIFEST_BYTES`], never blocking on a FIFO.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::MAX_MANIFEST_BYTES;

/// The bytes of one manifest file, or why it cannot be used.
pub(super) fn read_manifest(path: &Path) -> Result<Vec<u8>, String> {
    // Non-blocking: a FIFO put in the file's place since it was listed must
    // not wait for a writer. Regular files read as usual.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| format!("cannot read: {err}"))?;
    let metadata = file
        .metadata()
        .map_err(|err| format!("cannot read: {err}"))?;
    if !metadata.is_file() {
        return Err(format!("not a regular file ({})", file_kind(&metadata)));
    }
    if metadata.len() > MAX_MANIFEST_BYTES {
        return Err(too_large(Some(metadata.len())));
    }
    read_capped(file, metadata.len())
}

/// Reads at most one byte past the limit, so a file that grows (or reports
/// no size, as procfs does) cannot exhaust memory.
fn read_capped(file: File, expected: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read: {err}"))?;
    match u64::try_from(bytes.len()) {
        Ok(len) if len <= MAX_MANIFEST_BYTES => Ok(bytes),
        _ => Err(too_large(None)),
    }
}

fn too_large(size: Option<u64>) -> String {
    let limit = MAX_MANIFEST_BYTES / (1024 * 1024);
    match size {
        Some(size) => {
            format!("{size} bytes, larger than the {limit} MiB limit for one manifest file")
        }
        None => format!("larger than the {limit} MiB limit for one manifest file"),
    }
}

/// What kind of file something that is neither a directory nor a regular file is.
pub(super) fn file_kind(metadata: &Metadata) -> &'static str {
    let kind = metadata.file_type();
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "neither a directory nor a regular file"
    }
}
