//! The files source: a directory of Kubernetes and Istio manifests.
//!
//! Loads `*.yaml`, `*.yml` and `*.json` recursively (hidden entries such as a
//! ConfigMap mount's `..data` are skipped), multi-document YAML and `kind: List`.
//! A broken file or document never stops the load: it becomes a
//! [`LoadProblem`] naming the file, the document and, where the parser gives
//! it, the line. Only regular files are read, and none larger than
//! [`MAX_MANIFEST_BYTES`]: a FIFO or a device never blocks or floods the load.

mod document;
mod read;
mod split;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use tracing::debug;

use self::document::Document;
use self::read::{file_kind, read_manifest};
use self::split::split_documents;
use crate::model::Objects;

/// The largest manifest file that is read (64 MiB); a larger one is a
/// [`LoadProblem`].
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// Why nothing could be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read manifests at {path}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifests must be a directory or a regular file; {path} is {kind}")]
    NotFileOrDirectory { path: PathBuf, kind: &'static str },
}

/// One document (or file) that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProblem {
    pub file: PathBuf,
    /// 1-based document index within the file, when the problem is in one document.
    pub document: Option<usize>,
    /// 1-based line within the file, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl LoadProblem {
    /// Document, line and message, without the file.
    pub fn detail(&self) -> String {
        let mut out = String::new();
        if let Some(document) = self.document {
            out.push_str(&format!("document {document}, "));
        }
        if let Some(line) = self.line {
            out.push_str(&format!("line {line}: "));
        }
        out.push_str(&self.message);
        out
    }
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(document) = self.document {
            write!(f, ", document {document}")?;
        }
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub objects: Objects,
    pub problems: Vec<LoadProblem>,
    /// Kinds meshdrift does not use, with how many objects of each were skipped.
    pub skipped: BTreeMap<String, usize>,
    pub files: usize,
    pub documents: usize,
}

/// Loads every manifest under `dir` (or the single file `dir` names).
pub fn load_dir(dir: &Path) -> Result<LoadOutcome, LoadError> {
    let metadata = std::fs::metadata(dir).map_err(|source| LoadError::Unreadable {
        path: dir.to_owned(),
        source,
    })?;
    let mut outcome = LoadOutcome::default();
    let mut files = Vec::new();
    if metadata.is_dir() {
        let mut visited = HashSet::new();
        collect_files(dir, &mut files, &mut visited, &mut outcome.problems).map_err(|source| {
            LoadError::Unreadable {
                path: dir.to_owned(),
                source,
            }
        })?;
    } else if metadata.is_file() {
        files.push(dir.to_owned());
    } else {
        return Err(LoadError::NotFileOrDirectory {
            path: dir.to_owned(),
            kind: file_kind(&metadata),
        });
    }
    load_files(&files, &mut outcome);
    Ok(outcome)
}

/// Loads manifests from text already in memory; `file` only names it in problems.
pub fn load_str(file: &Path, text: &str, outcome: &mut LoadOutcome) {
    outcome.files += 1;
    // kubectl accepts a UTF-8 byte order mark; the parsers do not.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let is_json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        outcome.documents += 1;
        Document::new(file, 1, 1, outcome).add_json(text);
        return;
    }
    for (index, chunk) in split_documents(text).into_iter().enumerate() {
        outcome.documents += 1;
        Document::new(file, index + 1, chunk.first_line, outcome).add_yaml(chunk.text);
    }
}

fn load_files(files: &[PathBuf], outcome: &mut LoadOutcome) {
    for file in files {
        let text = read_manifest(file).and_then(|bytes| {
            String::from_utf8(bytes).map_err(|err| format!("not UTF-8 text: {err}"))
        });
        match text {
            Ok(text) => load_str(file, &text, outcome),
            Err(message) => outcome.problems.push(LoadProblem {
                file: file.clone(),
                document: None,
                line: None,
                message,
            }),
        }
    }
    for problem in &outcome.problems {
        debug!(%problem, "manifest problem");
    }
    debug!(
        files = outcome.files,
        documents = outcome.documents,
        objects = outcome.objects.len(),
        "manifests loaded"
    );
}

fn is_manifest(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["yaml", "yml", "json"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

/// Walks `dir` in name order, following symlinks but never the same directory twice.
fn collect_files(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    visited: &mut HashSet<PathBuf>,
    problems: &mut Vec<LoadProblem>,
) -> std::io::Result<()> {
    let canonical = dir.canonicalize()?;
    if !visited.insert(canonical) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for path in entries {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                if let Err(err) = collect_files(&path, files, visited, problems) {
                    problems.push(LoadProblem {
                        file: path.clone(),
                        document: None,
                        line: None,
                        message: format!("cannot read directory: {err}"),
                    });
                }
            }
            Ok(meta) if meta.is_file() && is_manifest(&path) => files.push(path),
            Ok(meta) if is_manifest(&path) => problems.push(LoadProblem {
                message: format!("not a regular file ({}); skipped", file_kind(&meta)),
                file: path,
                document: None,
                line: None,
            }),
            Ok(_) => {}
            Err(err) => problems.push(LoadProblem {
                file: path.clone(),
                document: None,
                line: None,
                message: format!("cannot read: {err}"),
            }),
        }
    }
    Ok(())
}
