//! One document of a manifest file: parsed once into a YAML value (merge
//! keys applied, as kubectl does), checked for `apiVersion` and `kind`, then
//! typed. The text is parsed again only when typing fails, to name the line.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;
use tracing::debug;

use super::split::{first_content_line, list_items};
use super::{LoadOutcome, LoadProblem};

/// The kinds meshdrift reads.
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

const ISTIO_NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const ISTIO_SECURITY: &[&str] = &["v1", "v1beta1"];

/// The kind an `apiVersion` and `kind` name, `None` for kinds meshdrift
/// does not read, or why the `apiVersion` is not one the API server serves.
fn classify(api_version: &str, kind: &str) -> Result<Option<Known>, String> {
    if api_version.is_empty() {
        return Err("document has no `apiVersion`".to_owned());
    }
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) if !group.is_empty() && is_version(version) => (group, version),
        Some(_) => {
            return Err(format!(
                "apiVersion {api_version:?} is not GROUP/VERSION (such as networking.istio.io/v1)"
            ));
        }
        // The core group is written as its version alone.
        None if is_version(api_version) => ("", api_version),
        None => {
            return Err(format!(
                "apiVersion {api_version:?} has no version (expected GROUP/VERSION, such as {api_version}/v1)"
            ));
        }
    };
    let (known, served): (Known, &[&str]) = match (group, kind) {
        ("", "Pod") => (Known::Pod, &["v1"]),
        ("", "Service") => (Known::Service, &["v1"]),
        ("", "Namespace") => (Known::Namespace, &["v1"]),
        ("discovery.k8s.io", "EndpointSlice") => (Known::EndpointSlice, &["v1", "v1beta1"]),
        ("networking.istio.io", "ServiceEntry") => (Known::ServiceEntry, ISTIO_NETWORKING),
        ("networking.istio.io", "VirtualService") => (Known::VirtualService, ISTIO_NETWORKING),
        ("networking.istio.io", "DestinationRule") => (Known::DestinationRule, ISTIO_NETWORKING),
        ("security.istio.io", "PeerAuthentication") => (Known::PeerAuthentication, ISTIO_SECURITY),
        _ => return Ok(None),
    };
    if !served.contains(&version) {
        return Err(format!(
            "{kind} is not served as {api_version} (versions: {})",
            served.join(", ")
        ));
    }
    Ok(Some(known))
}

/// `v1`, `v1beta1`, `v2alpha3`: Kubernetes' version names.
fn is_version(text: &str) -> bool {
    text.strip_prefix('v').is_some_and(|rest| {
        rest.starts_with(|c: char| c.is_ascii_digit())
            && rest.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

#[derive(Debug, Clone, Copy)]
enum Syntax {
    Yaml,
    Json,
}

/// Where a value came from, to find the line of a typing error afterwards.
#[derive(Clone, Copy)]
struct Source<'t> {
    /// `None` when the value cannot be traced back to text.
    text: Option<&'t str>,
    syntax: Syntax,
    /// File line of the first line of `text`.
    first_line: usize,
}

impl Source<'_> {
    fn content_line(&self) -> usize {
        self.text
            .map_or(self.first_line, |t| first_content_line(t, self.first_line))
    }

    /// The line a typed parse of the text fails on.
    fn line_of<T: DeserializeOwned>(&self) -> usize {
        let Some(text) = self.text else {
            return self.first_line;
        };
        let line = match self.syntax {
            Syntax::Yaml => serde_yaml_ng::from_str::<T>(text)
                .err()
                .and_then(|err| err.location())
                .map(|at| at.line()),
            Syntax::Json => serde_json::from_str::<T>(text).err().map(|err| err.line()),
        };
        line.map_or_else(|| self.content_line(), |l| self.first_line + l - 1)
    }
}

pub(super) struct Document<'a> {
    file: &'a Path,
    index: usize,
    first_line: usize,
    outcome: &'a mut LoadOutcome,
}

impl<'a> Document<'a> {
    pub(super) fn new(
        file: &'a Path,
        index: usize,
        first_line: usize,
        outcome: &'a mut LoadOutcome,
    ) -> Self {
        Document {
            file,
            index,
            first_line,
            outcome,
        }
    }

    fn problem(&mut self, line: usize, message: String) {
        self.outcome.problems.push(LoadProblem {
            file: self.file.to_owned(),
            document: Some(self.index),
            line: Some(line),
            message,
        });
    }

    pub(super) fn add_yaml(mut self, text: &str) {
        let source = Source {
            text: Some(text),
            syntax: Syntax::Yaml,
            first_line: self.first_line,
        };
        let mut value: Value = match serde_yaml_ng::from_str(text) {
            Ok(value) => value,
            Err(err) => {
                let line = err
                    .location()
                    .map_or(self.first_line, |at| self.first_line + at.line() - 1);
                let message = format!("invalid YAML: {}", strip_position(err.to_string()));
                return self.problem(line, message);
            }
        };
        // kubectl resolves merge keys (`<<: *anchor`); typed parsing does not.
        if let Err(err) = value.apply_merge() {
            let message = format!("invalid merge key: {}", strip_position(err.to_string()));
            return self.problem(source.content_line(), message);
        }
        self.add_value(value, source);
    }

    pub(super) fn add_json(mut self, text: &str) {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => self.add_value(
                value,
                Source {
                    text: Some(text),
                    syntax: Syntax::Json,
                    first_line: 1,
                },
            ),
            Err(err) => self.problem(err.line(), format!("invalid JSON: {err}")),
        }
    }

    fn add_value(&mut self, value: Value, source: Source<'_>) {
        if value.is_null() {
            return;
        }
        let (api_version, kind) = match header(&value) {
            Ok(header) => header,
            Err(message) => return self.problem(source.content_line(), message),
        };
        if is_list(&kind) {
            return self.add_list(value, source);
        }
        if let Err((line, message)) = self.add_object(&api_version, &kind, value, source) {
            self.problem(line, message);
        }
    }

    /// One object: stored, skipped as a kind meshdrift does not read, or a
    /// problem with its line.
    fn add_object(
        &mut self,
        api_version: &str,
        kind: &str,
        value: Value,
        source: Source<'_>,
    ) -> Result<(), (usize, String)> {
        let known = match classify(api_version, kind) {
            Ok(Some(known)) => known,
            Ok(None) => {
                self.skip(api_version, kind);
                return Ok(());
            }
            Err(message) => return Err((source.content_line(), message)),
        };
        let name = name_of(&value);
        let objects = &mut self.outcome.objects;
        match known {
            Known::Pod => typed(value, source).map(|o| objects.pods.push(o)),
            Known::Service => typed(value, source).map(|o| objects.services.push(o)),
            Known::Namespace => typed(value, source).map(|o| objects.namespaces.push(o)),
            Known::EndpointSlice => typed(value, source).map(|o| objects.endpoint_slices.push(o)),
            Known::ServiceEntry => typed(value, source).map(|o| objects.service_entries.push(o)),
            Known::VirtualService => typed(value, source).map(|o| objects.virtual_services.push(o)),
            Known::DestinationRule => {
                typed(value, source).map(|o| objects.destination_rules.push(o))
            }
            Known::PeerAuthentication => {
                typed(value, source).map(|o| objects.peer_authentications.push(o))
            }
        }
        .map_err(|(line, message)| (line, format!("{kind} {name}: {message}")))
    }

    /// The items of a `List`, each with its own line when the list is a
    /// block sequence.
    fn add_list(&mut self, value: Value, source: Source<'_>) {
        let Value::Mapping(mut list) = value else {
            return;
        };
        let items = match list.remove("items") {
            Some(Value::Sequence(items)) => items,
            None | Some(Value::Null) => return,
            Some(_) => {
                return self.problem(source.content_line(), "`items` is not a list".to_owned());
            }
        };
        let located = match (source.syntax, source.text) {
            (Syntax::Yaml, Some(text)) => list_items(text),
            _ => Vec::new(),
        };
        // Trust the located items only when they line up with the parsed ones.
        let located = if located.len() == items.len() {
            located
        } else {
            Vec::new()
        };
        for (position, item) in items.into_iter().enumerate() {
            let item_source = match located.get(position) {
                Some(at) => Source {
                    text: Some(&at.text),
                    syntax: Syntax::Yaml,
                    first_line: source.first_line + at.line,
                },
                None => Source {
                    text: None,
                    first_line: source.content_line(),
                    ..source
                },
            };
            let outcome = match header(&item) {
                Ok((_, kind)) if is_list(&kind) => Err((
                    item_source.first_line,
                    "nested lists are not supported".to_owned(),
                )),
                Ok((api_version, kind)) => self.add_object(&api_version, &kind, item, item_source),
                Err(message) => Err((item_source.first_line, message)),
            };
            if let Err((line, message)) = outcome {
                self.problem(line, format!("List item {position}: {message}"));
            }
        }
    }

    fn skip(&mut self, api_version: &str, kind: &str) {
        debug!(file = %self.file.display(), document = self.index, api_version, kind, "skipping unrelated kind");
        *self.outcome.skipped.entry(kind.to_owned()).or_default() += 1;
    }
}

/// The value as a typed object, or the message and line of why not.
fn typed<T: DeserializeOwned>(value: Value, source: Source<'_>) -> Result<T, (usize, String)> {
    serde_yaml_ng::from_value(value)
        .map_err(|err| (source.line_of::<T>(), strip_position(err.to_string())))
}

/// Removes the parser's own " at line L column C" (relative to the document,
/// not the file) since the problem carries the file line.
fn strip_position(message: String) -> String {
    match message.find(" at line ") {
        Some(pos) => message[..pos].to_owned(),
        None => message,
    }
}

fn is_list(kind: &str) -> bool {
    kind.ends_with("List")
}

fn header(value: &Value) -> Result<(String, String), String> {
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

fn name_of(value: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_need_a_version_the_server_serves() {
        let table = [
            ("v1", "Pod", Ok(true)),
            ("networking.istio.io/v1alpha3", "VirtualService", Ok(true)),
            ("apps/v1", "Deployment", Ok(false)),
            (
                "networking.istio.io",
                "VirtualService",
                Err("has no version"),
            ),
            ("apps", "Deployment", Err("has no version")),
            ("", "Pod", Err("no `apiVersion`")),
            ("/v1", "Pod", Err("not GROUP/VERSION")),
            (
                "networking.istio.io/",
                "VirtualService",
                Err("not GROUP/VERSION"),
            ),
            (
                "networking.istio.io/v2",
                "VirtualService",
                Err("not served"),
            ),
            (
                "security.istio.io/v1alpha3",
                "PeerAuthentication",
                Err("not served"),
            ),
        ];
        for (api_version, kind, want) in table {
            match (classify(api_version, kind), want) {
                (Ok(known), Ok(read)) => assert_eq!(known.is_some(), read, "{api_version}"),
                (Err(message), Err(says)) => assert!(message.contains(says), "{message}"),
                (got, want) => panic!("{api_version} {kind}: {got:?}, want {want:?}"),
            }
        }
    }
}
