//! The files source: a directory of Kubernetes and Istio manifests.
//!
//! Loads `*.yaml`, `*.yml` and `*.json` recursively (hidden entries such as a
//! ConfigMap mount's `..data` are skipped), multi-document YAML and `kind: List`.
//! A broken file or document never stops the load: it becomes a
//! [`LoadProblem`] naming the file, the document and, where the parser gives
//! it, the line. Only regular files are read, and none larger than
//! [`MAX_MANIFEST_BYTES`]: a FIFO or a device never blocks or floods the load.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tracing::debug;

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
    let is_json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        outcome.documents += 1;
        let mut doc = Document {
            file,
            index: 1,
            first_line: 1,
            outcome,
        };
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => doc.add_json(value, text),
            Err(err) => doc.problem(Some(err.line()), format!("invalid JSON: {err}")),
        }
        return;
    }
    for (index, chunk) in split_documents(text).into_iter().enumerate() {
        outcome.documents += 1;
        let mut doc = Document {
            file,
            index: index + 1,
            first_line: chunk.first_line,
            outcome,
        };
        doc.add_yaml(chunk.text);
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

/// The bytes of one manifest file, or why it cannot be used.
fn read_manifest(path: &Path) -> Result<Vec<u8>, String> {
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
fn file_kind(metadata: &Metadata) -> &'static str {
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

struct Chunk<'a> {
    text: &'a str,
    first_line: usize,
}

/// Splits a YAML stream at `---` lines, remembering where each document
/// starts so parser lines can be reported relative to the file. Documents that
/// hold only comments or blanks are dropped.
fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (line_no, line) in (1usize..).zip(text.split_inclusive('\n')) {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if is_marker && offset > start {
            chunks.push(Chunk {
                text: &text[start..offset],
                first_line: start_line,
            });
            start = offset;
            start_line = line_no;
        }
        offset += line.len();
    }
    if offset > start {
        chunks.push(Chunk {
            text: &text[start..offset],
            first_line: start_line,
        });
    }
    chunks.retain(|c| has_content(c.text));
    chunks
}

/// File line of the first line of `text` that is not a marker, comment or blank.
fn first_content_line(text: &str, first_line: usize) -> usize {
    text.lines()
        .position(|line| {
            let t = line.trim();
            !(t.is_empty() || t.starts_with('#') || t == "---" || t == "...")
        })
        .map_or(first_line, |offset| first_line + offset)
}

fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let t = line.trim();
        !(t.is_empty() || t.starts_with('#') || t == "---" || t == "...")
    })
}

/// Removes the parser's own " at line L column C" (relative to the document,
/// not the file) since the problem carries the file line.
fn strip_position(message: String) -> String {
    match message.find(" at line ") {
        Some(pos) => message[..pos].to_owned(),
        None => message,
    }
}

/// The kinds meshdrift reads, keyed by API group and kind.
#[derive(Debug, Clone, Copy)]
enum Known {
    Pod,
    Service,
    Namespace,
    EndpointSlice,
    ServiceEntry,
    VirtualService,
    DestinationRule,
    PeerAuthentication,
}

fn classify(api_version: &str, kind: &str) -> Option<Known> {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    Some(match (group, kind) {
        ("", "Pod") => Known::Pod,
        ("", "Service") => Known::Service,
        ("", "Namespace") => Known::Namespace,
        ("discovery.k8s.io", "EndpointSlice") => Known::EndpointSlice,
        ("networking.istio.io", "ServiceEntry") => Known::ServiceEntry,
        ("networking.istio.io", "VirtualService") => Known::VirtualService,
        ("networking.istio.io", "DestinationRule") => Known::DestinationRule,
        ("security.istio.io", "PeerAuthentication") => Known::PeerAuthentication,
        _ => return None,
    })
}

struct Document<'a> {
    file: &'a Path,
    index: usize,
    first_line: usize,
    outcome: &'a mut LoadOutcome,
}

impl Document<'_> {
    fn problem(&mut self, line: Option<usize>, message: String) {
        self.outcome.problems.push(LoadProblem {
            file: self.file.to_owned(),
            document: Some(self.index),
            line,
            message,
        });
    }

    fn yaml_line(&self, err: &serde_yaml_ng::Error) -> usize {
        err.location()
            .map_or(self.first_line, |l| self.first_line + l.line() - 1)
    }

    fn add_yaml(&mut self, text: &str) {
        match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
            Ok(value) => self.add_value(value, text, Syntax::Yaml),
            Err(err) => {
                let line = self.yaml_line(&err);
                self.problem(
                    Some(line),
                    format!("invalid YAML: {}", strip_position(err.to_string())),
                );
            }
        }
    }

    fn add_json(&mut self, value: serde_json::Value, text: &str) {
        match serde_yaml_ng::to_value(&value) {
            Ok(value) => self.add_value(value, text, Syntax::Json),
            Err(err) => self.problem(None, format!("unusable JSON: {err}")),
        }
    }

    fn add_value(&mut self, value: serde_yaml_ng::Value, text: &str, syntax: Syntax) {
        if value.is_null() {
            return;
        }
        let (api_version, kind) = match header(&value) {
            Ok(header) => header,
            Err(message) => {
                return self.problem(Some(first_content_line(text, self.first_line)), message);
            }
        };
        if is_list(&kind) {
            return self.add_list_items(value.get("items"));
        }
        let Some(known) = classify(&api_version, &kind) else {
            return self.skip(&api_version, &kind);
        };
        // Re-parse the text into the typed object so type errors carry a line.
        let objects = &mut self.outcome.objects;
        let first_line = self.first_line;
        let parse = TypedText {
            text,
            syntax,
            first_line,
        };
        let result = match known {
            Known::Pod => parse.typed().map(|o| objects.pods.push(o)),
            Known::Service => parse.typed().map(|o| objects.services.push(o)),
            Known::Namespace => parse.typed().map(|o| objects.namespaces.push(o)),
            Known::EndpointSlice => parse.typed().map(|o| objects.endpoint_slices.push(o)),
            Known::ServiceEntry => parse.typed().map(|o| objects.service_entries.push(o)),
            Known::VirtualService => parse.typed().map(|o| objects.virtual_services.push(o)),
            Known::DestinationRule => parse.typed().map(|o| objects.destination_rules.push(o)),
            Known::PeerAuthentication => {
                parse.typed().map(|o| objects.peer_authentications.push(o))
            }
        };
        if let Err((line, message)) = result {
            self.problem(Some(line), format!("{kind} {}: {message}", name_of(&value)));
        }
    }

    fn add_list_items(&mut self, items: Option<&serde_yaml_ng::Value>) {
        let Some(items) = items.and_then(|i| i.as_sequence()) else {
            return;
        };
        for (position, item) in items.iter().enumerate() {
            let (api_version, kind) = match header(item) {
                Ok(header) => header,
                Err(message) => {
                    self.problem(
                        Some(self.first_line),
                        format!("List item {position}: {message}"),
                    );
                    continue;
                }
            };
            if is_list(&kind) {
                self.problem(
                    Some(self.first_line),
                    format!("List item {position}: nested lists are not supported"),
                );
                continue;
            }
            let Some(known) = classify(&api_version, &kind) else {
                self.skip(&api_version, &kind);
                continue;
            };
            let objects = &mut self.outcome.objects;
            let result = match known {
                Known::Pod => typed_value(item).map(|o| objects.pods.push(o)),
                Known::Service => typed_value(item).map(|o| objects.services.push(o)),
                Known::Namespace => typed_value(item).map(|o| objects.namespaces.push(o)),
                Known::EndpointSlice => typed_value(item).map(|o| objects.endpoint_slices.push(o)),
                Known::ServiceEntry => typed_value(item).map(|o| objects.service_entries.push(o)),
                Known::VirtualService => {
                    typed_value(item).map(|o| objects.virtual_services.push(o))
                }
                Known::DestinationRule => {
                    typed_value(item).map(|o| objects.destination_rules.push(o))
                }
                Known::PeerAuthentication => {
                    typed_value(item).map(|o| objects.peer_authentications.push(o))
                }
            };
            if let Err(message) = result {
                self.problem(
                    Some(self.first_line),
                    format!("List item {position}, {kind} {}: {message}", name_of(item)),
                );
            }
        }
    }

    fn skip(&mut self, api_version: &str, kind: &str) {
        debug!(file = %self.file.display(), document = self.index, api_version, kind, "skipping unrelated kind");
        *self.outcome.skipped.entry(kind.to_owned()).or_default() += 1;
    }
}

#[derive(Debug, Clone, Copy)]
enum Syntax {
    Yaml,
    Json,
}

/// The text of one document, parsed again into a typed object.
struct TypedText<'a> {
    text: &'a str,
    syntax: Syntax,
    first_line: usize,
}

impl TypedText<'_> {
    fn typed<T: DeserializeOwned>(&self) -> Result<T, (usize, String)> {
        match self.syntax {
            Syntax::Yaml => serde_yaml_ng::from_str(self.text).map_err(|err| {
                let line = err
                    .location()
                    .map_or(self.first_line, |l| self.first_line + l.line() - 1);
                (line, strip_position(err.to_string()))
            }),
            Syntax::Json => serde_json::from_str(self.text)
                .map_err(|err| (err.line(), strip_position(err.to_string()))),
        }
    }
}

fn typed_value<T: DeserializeOwned>(value: &serde_yaml_ng::Value) -> Result<T, String> {
    T::deserialize(value.clone()).map_err(|err| strip_position(err.to_string()))
}

fn is_list(kind: &str) -> bool {
    kind == "List" || kind.ends_with("List")
}

fn header(value: &serde_yaml_ng::Value) -> Result<(String, String), String> {
    if !value.is_mapping() {
        return Err("document is not a mapping (expected a Kubernetes object)".to_owned());
    }
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or_else(|| "document has no `kind`".to_owned())?;
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    Ok((api_version.to_owned(), kind.to_owned()))
}

fn name_of(value: &serde_yaml_ng::Value) -> String {
    let metadata = value.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>");
    match metadata
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
    {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}
