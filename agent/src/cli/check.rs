//! `meshdrift check`: static findings on a set of manifests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::terminal::TerminalText;
use super::{OutputFormat, output};
use crate::findings::{Finding, Severity, codes};
use crate::inventory::Index;
use crate::inventory::files::{self, LoadOutcome};
use crate::policy::{Policies, check};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Directory (or file) of Kubernetes and Istio manifests.
    #[arg(long, value_name = "DIR")]
    pub manifests: PathBuf,
    /// Output format (`table` prints the same as `text`).
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Debug, serde::Serialize)]
struct Report<'a> {
    files: usize,
    documents: usize,
    objects: usize,
    skipped: &'a std::collections::BTreeMap<String, usize>,
    findings: &'a [Finding],
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut outcome = files::load_dir(&args.manifests)?;
    // The index takes the objects over, so a large directory is not held twice.
    let objects = std::mem::take(&mut outcome.objects);
    let loaded = objects.len();
    let policies = Policies::build(&objects);
    let index = Index::from_objects(objects);
    let mut findings: Vec<Finding> = outcome
        .problems
        .iter()
        .map(|problem| {
            Finding::new(
                codes::LOAD_PROBLEM,
                Severity::Error,
                problem.file.display().to_string(),
                problem.detail(),
            )
        })
        .collect();
    findings.extend(nothing_loaded(&args.manifests, &outcome, loaded));
    findings.extend(check(&index, &policies));
    let report = Report {
        files: outcome.files,
        documents: outcome.documents,
        objects: loaded,
        skipped: &outcome.skipped,
        findings: &findings,
    };
    let text = match args.output {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text | OutputFormat::Table => render_text(&report),
    };
    output::print(&text)?;
    let failed = findings.iter().any(|f| f.severity == Severity::Error);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A wrong path must not pass: no manifest, or none with an object meshdrift
/// reads, is an error.
fn nothing_loaded(path: &Path, outcome: &LoadOutcome, loaded: usize) -> Option<Finding> {
    let message = if outcome.files == 0 {
        "no manifest files (*.yaml, *.yml, *.json) found: nothing was checked".to_owned()
    } else if loaded == 0 && outcome.problems.is_empty() {
        format!(
            "{} manifest files hold no Pod, Service, EndpointSlice, Namespace, ServiceEntry, VirtualService, DestinationRule or PeerAuthentication: nothing was checked",
            outcome.files
        )
    } else {
        return None;
    };
    Some(Finding::new(
        codes::NO_MANIFESTS,
        Severity::Error,
        path.display().to_string(),
        message,
    ))
}

fn render_text(report: &Report<'_>) -> String {
    let mut out = TerminalText::default();
    let skipped: usize = report.skipped.values().sum();
    let mut summary = format!(
        "Loaded {} objects from {} documents in {} files",
        report.objects, report.documents, report.files
    );
    if skipped > 0 {
        let kinds: Vec<String> = report
            .skipped
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let _ = write!(
            summary,
            "; skipped {skipped} of other kinds ({})",
            kinds.join(", ")
        );
    }
    out.line(format_args!("{summary}"));
    if report.findings.is_empty() {
        out.line(format_args!("No findings."));
        return out.into_string();
    }
    for finding in report.findings {
        out.line(format_args!("{finding}"));
    }
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    out.line(format_args!(
        "{} errors, {} warnings, {} info",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info)
    ));
    out.into_string()
}
