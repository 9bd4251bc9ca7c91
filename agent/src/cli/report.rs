//! `meshdrift report`: fetch a running agent's report, or the cluster's from
//! Prometheus (`cluster_report`), and render it for a terminal or a browser.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use super::agent_url::AgentUrl;
use super::cluster_report;
use super::duration::parse_duration;
use super::nodes_table;
use super::output;
use super::terminal::{TerminalText, escape};
use crate::report::format;
use crate::report::{PodSplitVerdict, PolicyOutcome, Report, SplitVerdict};
use crate::wire::Transport;

/// The largest report body read from an agent.
const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportOutput {
    /// Aligned tables.
    Table,
    /// The agent's JSON report, pretty-printed.
    Json,
    /// The report page as one self-contained HTML document.
    Html,
}

const EXAMPLES: &str = "Examples:
  # One agent (port-forwarded from the DaemonSet)
  meshdrift report --url http://127.0.0.1:9477

  # The whole cluster over the last hour, from the Prometheus that scrapes the agents
  meshdrift report --prometheus http://prometheus.monitoring:9090

  # Thanos or Mimir (any Prometheus-compatible query API), behind a token and a private CA
  meshdrift report --prometheus https://thanos.example:10902 --token-file token --ca-file ca.pem

  # A past half hour, as an HTML page
  meshdrift report --prometheus http://127.0.0.1:9090 --at 2026-01-31T12:00:00Z --range 30m \\
      --output html > cluster.html

With --prometheus, the splits are judged as an agent judges them (its sequential test, \
tolerance 0.05) on the counts of every agent summed, one batch per --step; the report \
adds each node's share of every split and the client pods the agents find drifting.";

#[derive(Debug, clap::Args)]
#[command(after_long_help = EXAMPLES)]
pub struct ReportArgs {
    /// Base URL of the agent (its --listen address): http[s]://HOST:PORT[/PREFIX], or HOST:PORT.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9477", value_parser = AgentUrl::parse)]
    pub url: AgentUrl,
    /// Report on the whole cluster instead, from the Prometheus-compatible API at URL
    /// (Prometheus, Thanos Query, Mimir) that scrapes the agents: http[s]://HOST:PORT[/PREFIX].
    #[arg(long, value_name = "URL", conflicts_with = "url", value_parser = AgentUrl::parse)]
    pub prometheus: Option<AgentUrl>,
    /// How long to wait for the agent's whole answer, or for each Prometheus query
    /// [default: 15s for an agent, 30s per query for --prometheus].
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// With --prometheus: the period judged, ending at --at.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub range: Duration,
    /// With --prometheus: the query resolution, and one batch of the sequential test.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub step: Duration,
    /// With --prometheus: the scrape job of the agents.
    #[arg(long, default_value = "meshdrift")]
    pub job: String,
    /// With --prometheus: the end of the range, an RFC 3339 time [default: now].
    #[arg(long, value_name = "TIME", value_parser = cluster_report::parse_time, requires = "prometheus")]
    pub at: Option<f64>,
    /// With --prometheus: the share difference that counts as drift (0.05: 5 points)
    /// [default: the agent's, 0.05].
    #[arg(long, value_name = "SHARE", value_parser = cluster_report::parse_tolerance, requires = "prometheus")]
    pub tolerance: Option<f64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: ReportOutput,
    /// A file holding the bearer token sent to an agent started with --auth kubernetes,
    /// or to the --prometheus URL [default: the pod's service-account token, when run inside a pod].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate(s) to trust for an https:// agent or --prometheus URL
    /// [default: the public web roots].
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// How long `report` waits for an agent's whole answer by default.
const AGENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a pod finds its service account's token.
const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// How `report` reaches an agent: its URL, the token it sends and the
/// certificates it trusts.
#[derive(Debug, Clone)]
pub struct AgentAccess {
    pub url: AgentUrl,
    pub timeout: Duration,
    pub token: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
}

impl AgentAccess {
    pub(super) fn from_args(args: &ReportArgs) -> anyhow::Result<Self> {
        let token = match &args.token_file {
            Some(path) => Some(read_token(path)?),
            None if Path::new(IN_CLUSTER_TOKEN).is_file() => {
                Some(read_token(Path::new(IN_CLUSTER_TOKEN))?)
            }
            None => None,
        };
        let ca_pem = match &args.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading --ca-file {}", path.display()))?,
            ),
            None => None,
        };
        Ok(AgentAccess {
            url: args.url.clone(),
            timeout: args.timeout.unwrap_or(AGENT_TIMEOUT),
            token,
            ca_pem,
        })
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = token.trim();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token.to_owned())
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let report = match &args.prometheus {
        Some(prometheus) => cluster_report::fetch(&args, prometheus)?,
        None => fetch(&AgentAccess::from_args(&args)?)?,
    };
    let text = match args.output {
        ReportOutput::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
        ReportOutput::Table => render_table(&report),
        ReportOutput::Html => crate::http::page::render(&report),
    };
    output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Decodes the body of an agent's `GET /report`.
pub fn decode(body: &str) -> Result<Report, serde_json::Error> {
    serde_json::from_str(body)
}

/// An HTTP client that gives up after `timeout` and trusts `ca_pem`'s
/// certificates if given, else the public web roots.
pub(super) fn http_agent(timeout: Duration, ca_pem: Option<&[u8]>) -> anyhow::Result<ureq::Agent> {
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false);
    if let Some(pem) = ca_pem {
        let roots = ureq::tls::parse_pem(pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                Ok(_) => None,
                Err(err) => Some(Err(err)),
            })
            .collect::<Result<Vec<_>, _>>()
            .context("reading the certificates of --ca-file")?;
        if roots.is_empty() {
            bail!("--ca-file holds no PEM certificate");
        }
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                .build(),
        );
    }
    Ok(config.build().into())
}

fn fetch(access: &AgentAccess) -> anyhow::Result<Report> {
    let timeout = access.timeout;
    let url = access.url.endpoint("/report");
    let agent = http_agent(timeout, access.ca_pem.as_deref())?;
    let mut request = agent.get(&url);
    if let Some(token) = &access.token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request
        .call()
        .map_err(|err| request_failed(&url, err, timeout))?;
    let status = response.status();
    if !status.is_success() {
        // The agent's refusal says why (401: token, 403: the grant it lacks).
        let reason = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let hint = match status.as_u16() {
            401 if access.token.is_none() => {
                " (the agent runs with --auth kubernetes: pass --token-file)"
            }
            _ => "",
        };
        bail!(
            "GET {url}: the agent answered {status}{hint}: {}",
            reason.trim()
        );
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_REPORT_BYTES)
        .read_to_string()
        .map_err(|err| request_failed(&url, err, timeout))?;
    decode(&body).with_context(|| {
        format!("GET {url}: the answer ({status}) is not a meshdrift report of this version")
    })
}

/// What went wrong before an answer arrived, in words that say which.
fn request_failed(url: &str, err: ureq::Error, timeout: Duration) -> anyhow::Error {
    match err {
        ureq::Error::Timeout(_) => anyhow!("GET {url}: no answer within {timeout:?} (timed out)"),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => connect_failed(url, err),
        ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            connect_failed(url, err)
        }
        err => anyhow::Error::new(err).context(format!("GET {url} failed")),
    }
}

fn connect_failed(url: &str, err: ureq::Error) -> anyhow::Error {
    anyhow::Error::new(err).context(format!(
        "cannot connect to {url}: is `meshdrift run` listening there? Check --url, the \
         agent's --listen address, and (in a cluster) `kubectl -n meshdrift port-forward \
         ds/meshdrift 9477`"
    ))
}

/// The whole report as aligned plain-text tables.
pub fn render_table(report: &Report) -> String {
    let mut out = TerminalText::default();
    out.line(format_args!(
        "meshdrift report — node {}, window {}, generated {}",
        report.node,
        format::duration(report.window_seconds),
        report.generated_at
    ));
    splits(&mut out, &report.splits);
    pods(&mut out, &report.pods, !report.nodes.is_empty());
    nodes_table::render(&mut out, report);
    transport(&mut out, report);
    unexpected(&mut out, report);
    bypass(&mut out, report);
    ambient(&mut out, report);
    policies(&mut out, report);
    findings(&mut out, report);
    health(&mut out, report);
    out.into_string()
}

fn section(out: &mut TerminalText, title: &str, count: usize) {
    out.blank();
    out.line(format_args!("{title} ({count})"));
}

fn splits(out: &mut TerminalText, splits: &[SplitVerdict]) {
    section(out, "SPLITS", splits.len());
    if splits.is_empty() {
        out.line(format_args!("  no split observed in this window yet"));
        return;
    }
    let mut table = Table::new(["SOURCE", "HOST:PORT", "UNIT", "SAMPLES", "P", "VERDICT"]);
    let mut ordered: Vec<&SplitVerdict> = splits.iter().collect();
    ordered.sort_by_key(|s| !s.drift);
    for split in ordered {
        table.row([
            split.source.to_string(),
            format!("{}:{}", split.host, split.port),
            format::split_unit(split.unit, split.estimated),
            split.samples.to_string(),
            format::p_value(split.p_value),
            format!("{}: {}", verdict_word(split), split.reason),
        ]);
        subset_details(&mut table, split);
    }
    table.render(out);
}

fn verdict_word(split: &SplitVerdict) -> &'static str {
    if split.drift {
        "DRIFT"
    } else if split.tested() {
        "ok"
    } else {
        "not tested"
    }
}

fn subset_details<const N: usize>(table: &mut Table<N>, split: &SplitVerdict) {
    for share in &split.subsets {
        table.detail(format!(
            "  subset {:<12} declared {:>6}  observed {:>6}  ({:>5} – {:>5})  {:>9}  n={}",
            share.subset.as_deref().unwrap_or("(host)"),
            format::percent(share.declared),
            format::percent(share.observed),
            format::percent(share.ci_low),
            format::percent(share.ci_high),
            format::points(share.observed - share.declared),
            share.count,
        ));
    }
}

/// Pods listed at most; the drifting ones first.
const MAX_POD_ROWS: usize = 50;

/// Each client pod's own split: a drifting pod among healthy ones is the
/// proxy to check and restart.
///
/// A report joining several agents (`cluster`) lists only the pods the agents
/// export, the drifting ones.
fn pods(out: &mut TerminalText, pods: &[PodSplitVerdict], cluster: bool) {
    let drifting = pods.iter().filter(|p| p.split.drift).count();
    out.blank();
    out.line(format_args!(
        "CLIENT PODS ({} judged, {drifting} drifting)",
        pods.len()
    ));
    if pods.is_empty() {
        if cluster {
            out.line(format_args!("  no client pod's own split drifts"));
        } else {
            out.line(format_args!(
                "  no client pod's split observed in this window yet"
            ));
        }
        return;
    }
    let mut table = Table::new(["POD", "HOST:PORT", "SAMPLES", "VERDICT"]);
    let mut ordered: Vec<&PodSplitVerdict> = pods.iter().collect();
    ordered.sort_by_key(|p| !p.split.drift);
    for pod in ordered.iter().take(MAX_POD_ROWS) {
        let split = &pod.split;
        table.row([
            pod.pod.clone(),
            format!("{}:{}", split.host, split.port),
            split.samples.to_string(),
            format!("{}: {}", verdict_word(split), split.reason),
        ]);
        if split.drift {
            subset_details(&mut table, split);
        }
    }
    table.render(out);
    if pods.len() > MAX_POD_ROWS {
        out.line(format_args!(
            "  … and {} more (all in --output json)",
            pods.len() - MAX_POD_ROWS
        ));
    }
    if cluster {
        out.line(format_args!(
            "  client pods not listed are not drifting: agents export only the pods whose own split drifts"
        ));
    }
}

fn transport(out: &mut TerminalText, report: &Report) {
    section(out, "TRANSPORT", report.transport.len());
    if report.transport.is_empty() {
        out.line(format_args!(
            "  no connection with a known expectation in this window"
        ));
        return;
    }
    let mut table = Table::new([
        "SOURCE", "HOST", "SUBSET", "EXPECTED", "OBSERVED", "VERDICT",
    ]);
    let mut ordered: Vec<_> = report.transport.iter().collect();
    ordered.sort_by_key(|t| (!t.violation, !t.mismatch));
    for t in ordered {
        // Transport::ALL order, not the map's alphabetical one.
        let observed: Vec<String> = Transport::ALL
            .iter()
            .filter_map(|tr| t.observed.get(tr.as_str()).map(|n| format!("{tr}={n}")))
            .collect();
        let verdict = if t.violation {
            format!("VIOLATION ({} plaintext)", t.violations)
        } else if t.mismatch {
            format!("mismatch ({})", t.mismatches)
        } else {
            "ok".to_owned()
        };
        table.row([
            t.source.to_string(),
            t.host.clone(),
            t.subset.clone().unwrap_or_else(|| "-".into()),
            t.expected.map_or("unknown", |e| e.as_str()).to_owned(),
            observed.join(" "),
            verdict,
        ]);
    }
    table.render(out);
}

fn unexpected(out: &mut TerminalText, report: &Report) {
    section(out, "UNEXPECTED DESTINATIONS", report.unexpected.len());
    if report.unexpected.is_empty() {
        out.line(format_args!("  none"));
        return;
    }
    let mut table = Table::new(["SOURCE", "HOST:PORT", "REACHED", "CONNS", "REQS", "WHY"]);
    for u in &report.unexpected {
        table.row([
            u.source.to_string(),
            format!("{}:{}", u.host, u.port),
            u.destination.clone(),
            u.connections.to_string(),
            u.requests.to_string(),
            u.reason.clone(),
        ]);
    }
    table.render(out);
}

fn bypass(out: &mut TerminalText, report: &Report) {
    section(out, "BYPASSING THE MESH", report.bypass.len());
    if report.bypass.is_empty() {
        out.line(format_args!("  none"));
        return;
    }
    let mut table = Table::new([
        "SOURCE",
        "HOST:PORT",
        "SUBSET",
        "WHY",
        "TRANSPORT",
        "CONNS",
        "REQS",
    ]);
    for row in &report.bypass {
        table.row([
            row.source.to_string(),
            format!("{}:{}", row.destination.host, row.destination.port),
            row.destination
                .subset
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
            format!("BYPASS: {}", format::bypass_reason(row.reason)),
            row.transport.clone(),
            row.connections.to_string(),
            row.requests.to_string(),
        ]);
    }
    table.render(out);
}

/// Only when some client is in ambient mode (a sidecar mesh has none).
fn ambient(out: &mut TerminalText, report: &Report) {
    if report.ambient.is_empty() {
        return;
    }
    section(
        out,
        "AMBIENT MODE (SHOWN, NOT JUDGED)",
        report.ambient.len(),
    );
    let mut table = Table::new([
        "SOURCE",
        "HOST:PORT",
        "SUBSET",
        "MODE",
        "TRANSPORT",
        "CONNS",
        "REQS",
    ]);
    for row in &report.ambient {
        table.row([
            row.source.to_string(),
            format!("{}:{}", row.destination.host, row.destination.port),
            row.destination
                .subset
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
            "AMBIENT".to_owned(),
            row.transport.clone(),
            row.connections.to_string(),
            row.requests.to_string(),
        ]);
    }
    table.render(out);
}

/// One row per check, violations first; what was declared, seen and why on
/// the lines under it.
fn policies(out: &mut TerminalText, report: &Report) {
    section(out, "TRAFFIC POLICIES", report.policies.len());
    if report.policies.is_empty() {
        out.line(format_args!("  none"));
        return;
    }
    let mut ordered: Vec<&crate::report::PolicyVerdict> = report.policies.iter().collect();
    ordered.sort_by_key(|p| match p.verdict {
        PolicyOutcome::Violation => 0,
        PolicyOutcome::Ok => 1,
        PolicyOutcome::Untested => 2,
    });
    let mut table = Table::new([
        "SOURCE",
        "HOST:PORT",
        "SUBSET",
        "CHECK",
        "VERDICT",
        "SAMPLES",
    ]);
    for policy in ordered {
        table.row([
            policy.source.to_string(),
            format!("{}:{}", policy.host, policy.port),
            policy.subset.clone().unwrap_or_else(|| "-".to_owned()),
            policy.check.as_str().to_owned(),
            policy.verdict.as_str().to_ascii_uppercase(),
            policy.samples.to_string(),
        ]);
        table.detail(format!("  declared: {}", policy.declared));
        table.detail(format!("  observed: {}", policy.observed));
        table.detail(format!("  {}", policy.reason));
    }
    table.render(out);
}

fn findings(out: &mut TerminalText, report: &Report) {
    section(out, "FINDINGS", report.findings.len());
    if report.findings.is_empty() {
        out.line(format_args!("  none"));
        return;
    }
    let mut table = Table::new(["SEVERITY", "CODE", "RESOURCE", "MESSAGE"]);
    for f in &report.findings {
        table.row([
            f.severity.to_string(),
            f.code.clone(),
            f.resource.clone(),
            f.message.clone(),
        ]);
    }
    table.render(out);
}

fn health(out: &mut TerminalText, report: &Report) {
    let agent = &report.agent;
    out.blank();
    out.line(format_args!("AGENT"));
    out.line(format_args!(
        "  version {}, up {}, {} flows tracked",
        agent.version,
        format::duration(agent.uptime_seconds),
        agent.flows_tracked
    ));
    let join = |map: &std::collections::BTreeMap<String, u64>| {
        if map.is_empty() {
            "none".to_owned()
        } else {
            map.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    let lost: u64 = agent.lost_events.values().sum();
    out.line(format_args!(
        "  lost events: {}{}",
        join(&agent.lost_events),
        if lost > 0 {
            "  (counts are incomplete)"
        } else {
            ""
        }
    ));
    out.line(format_args!("  inventory: {}", join(&agent.inventory)));
    out.line(format_args!(
        "  excluded flows: {}",
        join(&agent.excluded_flows)
    ));
}

/// Left-aligned columns sized to their widest cell, with optional free-form
/// detail lines under a row (the subsets of a split).
pub(super) struct Table<const N: usize> {
    header: [String; N],
    rows: Vec<([String; N], Vec<String>)>,
}

impl<const N: usize> Table<N> {
    pub(super) fn new(header: [&str; N]) -> Self {
        Table {
            header: header.map(str::to_owned),
            rows: Vec::new(),
        }
    }

    /// Cells are escaped here, so widths count what the terminal shows.
    pub(super) fn row(&mut self, cells: [String; N]) {
        self.rows
            .push((cells.map(|cell| escape(&cell).into_owned()), Vec::new()));
    }

    fn detail(&mut self, line: String) {
        if let Some((_, details)) = self.rows.last_mut() {
            details.push(escape(&line).into_owned());
        }
    }

    pub(super) fn render(&self, out: &mut TerminalText) {
        let mut widths = self.header.clone().map(|h| h.chars().count());
        for (cells, _) in &self.rows {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String; N]| {
            let mut s = String::from(" ");
            for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                s.push(' ');
                s.push_str(cell);
                if i + 1 < N {
                    s.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 1));
                }
            }
            s.truncate(s.trim_end().len());
            s
        };
        out.line(format_args!("{}", line(&self.header)));
        for (cells, details) in &self.rows {
            out.line(format_args!("{}", line(cells)));
            for detail in details {
                out.line(format_args!("  {detail}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::observation::{ExpectedTransport, Unit, Workload};
    use crate::report::{AgentHealth, SubsetShare, TransportVerdict};

    fn workload(name: &str) -> Workload {
        Workload {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn share(subset: &str, declared: f64, observed: f64, count: u64) -> SubsetShare {
        SubsetShare {
            subset: Some(subset.into()),
            declared,
            observed,
            count,
            ci_low: observed - 0.0125,
            ci_high: observed + 0.0125,
        }
    }

    fn report() -> Report {
        Report {
            generated_at: "2026-11-24T06:30:00Z".into(),
            node: "lab-node-1".into(),
            window_seconds: 600,
            splits: vec![SplitVerdict {
                source: workload("loadgen"),
                host: "frontend.default.svc.cluster.local".into(),
                port: 80,
                unit: Unit::Request,
                samples: 4000,
                estimated: false,
                p_value: Some(1e-200),
                drift: true,
                reason: "v2 gets 20.0%, declared 50.0%".into(),
                subsets: vec![share("v1", 0.5, 0.8, 3200), share("v2", 0.5, 0.2, 800)],
                evidence: None,
            }],
            transport: vec![TransportVerdict {
                source: workload("curl"),
                host: "frontend.default.svc.cluster.local".into(),
                subset: Some("v2".into()),
                expected: Some(ExpectedTransport::Mtls),
                observed: BTreeMap::from([("http".to_owned(), 57), ("istio_mtls".to_owned(), 3)]),
                violation: true,
                mismatch: false,
                violations: 57,
                mismatches: 0,
            }],
            unexpected: vec![],
            bypass: vec![],
            ambient: vec![],
            policies: vec![],
            findings: vec![],
            agent: AgentHealth {
                version: "0.1.0".into(),
                lost_events: BTreeMap::from([("ringbuf_full".to_owned(), 3)]),
                ..AgentHealth::default()
            },
            pods: Vec::new(),
            nodes: Vec::new(),
        }
    }

    #[test]
    fn client_pods_list_the_drifting_pod_first_with_its_shares() {
        let mut report = report();
        let stale = report.splits[0].clone();
        let mut healthy = stale.clone();
        healthy.drift = false;
        healthy.reason = "consistent with the declared split".into();
        report.pods = vec![
            PodSplitVerdict {
                pod: "default/loadgen-a".into(),
                split: healthy,
            },
            PodSplitVerdict {
                pod: "default/loadgen-b".into(),
                split: stale,
            },
        ];
        let text = render_table(&report);
        assert!(
            text.contains("CLIENT PODS (2 judged, 1 drifting)"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let b = lines
            .iter()
            .position(|l| l.contains("default/loadgen-b"))
            .expect("the drifting pod's row");
        let a = lines
            .iter()
            .position(|l| l.contains("default/loadgen-a"))
            .expect("the healthy pod's row");
        assert!(b < a, "drifting first:\n{text}");
        assert!(lines[b].contains("DRIFT"), "{text}");
        assert!(lines[b + 1].contains("subset v1"), "{text}");
        assert!(lines[a].contains("ok: consistent"), "{text}");
        assert!(
            !lines[a + 1].contains("subset"),
            "healthy pods stay one line:\n{text}"
        );
        assert!(
            render_table(&super::tests::report()).contains("CLIENT PODS (0 judged, 0 drifting)")
        );
    }

    #[test]
    fn split_row_then_one_line_per_subset() {
        let text = render_table(&report());
        let lines: Vec<&str> = text.lines().collect();
        let row = lines
            .iter()
            .position(|l| l.contains("default/loadgen"))
            .expect("split row");
        assert!(
            lines[row].contains("frontend.default.svc.cluster.local:80"),
            "{text}"
        );
        assert!(
            lines[row].contains("requests") && lines[row].contains("4000"),
            "{text}"
        );
        assert!(
            lines[row].contains("1.0e-200") && lines[row].contains("DRIFT: v2 gets 20.0%"),
            "{text}"
        );
        assert!(
            lines[row + 1].contains("subset v1") && lines[row + 1].contains("declared  50.0%"),
            "{text}"
        );
        assert!(
            lines[row + 1].contains("observed  80.0%")
                && lines[row + 1].contains("(78.8% – 81.2%)"),
            "{text}"
        );
        assert!(
            lines[row + 2].contains("subset v2") && lines[row + 2].contains("-30.0 pp"),
            "{text}"
        );
    }

    #[test]
    fn bypass_lists_each_row_with_its_reason() {
        let mut r = report();
        r.bypass.push(crate::report::BypassRow {
            source: workload("batch"),
            destination: crate::report::ServiceDestination {
                host: "frontend.default.svc.cluster.local".into(),
                port: 80,
                subset: None,
            },
            reason: crate::observation::BypassReason::SidecarBypassed,
            transport: "http".into(),
            connections: 1,
            requests: 37,
        });
        let text = render_table(&r);
        assert!(text.contains("BYPASSING THE MESH (1)"), "{text}");
        let row = text
            .lines()
            .find(|l| l.contains("default/batch"))
            .expect("bypass row");
        for cell in [
            "frontend.default.svc.cluster.local:80",
            "BYPASS: around its sidecar",
            "http",
            "37",
        ] {
            assert!(row.contains(cell), "{row}");
        }
        assert!(render_table(&report()).contains("BYPASSING THE MESH (0)\n  none"));
    }

    #[test]
    fn ambient_rows_have_their_own_section_and_no_bypass_verdict() {
        assert!(
            !render_table(&report()).contains("AMBIENT"),
            "no section without ambient clients"
        );
        let mut r = report();
        r.ambient.push(crate::report::AmbientRow {
            source: workload("batch"),
            destination: crate::report::ServiceDestination {
                host: "frontend.default.svc.cluster.local".into(),
                port: 80,
                subset: None,
            },
            transport: "http".into(),
            connections: 2,
            requests: 41,
        });
        let text = render_table(&r);
        assert!(
            text.contains("AMBIENT MODE (SHOWN, NOT JUDGED) (1)"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.contains("default/batch"))
            .expect("ambient row");
        for cell in [
            "frontend.default.svc.cluster.local:80",
            "AMBIENT",
            "http",
            "41",
        ] {
            assert!(row.contains(cell), "{row}");
        }
        assert!(!row.contains("BYPASS"), "{row}");
    }

    #[test]
    fn transport_lists_observed_transports_and_the_violation() {
        let text = render_table(&report());
        let row = text
            .lines()
            .find(|l| l.contains("default/curl"))
            .expect("transport row");
        assert!(
            row.contains("mtls") && row.contains("istio_mtls=3 http=57"),
            "{row}"
        );
        assert!(row.contains("VIOLATION (57 plaintext)"), "{row}");
    }

    #[test]
    fn traffic_policies_put_violations_first_with_their_evidence() {
        let mut r = report();
        for (check, verdict) in [
            (
                crate::report::PolicyCheck::LoadBalancer,
                PolicyOutcome::Untested,
            ),
            (
                crate::report::PolicyCheck::MaxConnections,
                PolicyOutcome::Violation,
            ),
        ] {
            r.policies.push(crate::report::PolicyVerdict {
                source: workload("client"),
                host: "backend.default.svc.cluster.local".into(),
                port: 80,
                subset: Some("v1".into()),
                check,
                declared: "at most 2 connections".into(),
                observed: "at most 16 open at once".into(),
                verdict,
                reason: "more than 2 connections stayed open for 4.0 s".into(),
                samples: 40,
            });
        }
        let text = render_table(&r);
        assert!(text.contains("TRAFFIC POLICIES (2)"), "{text}");
        let violation = text.find("max_connections").expect("violation row");
        let untested = text.find("load_balancer").expect("untested row");
        assert!(violation < untested, "violations come first:\n{text}");
        assert!(text.contains("VIOLATION"), "{text}");
        assert!(text.contains("declared: at most 2 connections"), "{text}");
        assert!(text.contains("observed: at most 16 open at once"), "{text}");
    }

    #[test]
    fn empty_sections_say_so_and_lost_events_warn() {
        let text = render_table(&report());
        assert!(
            text.contains("UNEXPECTED DESTINATIONS (0)\n  none\n"),
            "{text}"
        );
        assert!(text.contains("FINDINGS (0)\n  none\n"), "{text}");
        assert!(
            text.contains("lost events: ringbuf_full=3  (counts are incomplete)"),
            "{text}"
        );
    }

    #[test]
    fn columns_line_up() {
        let mut r = report();
        let mut second = r.splits[0].clone();
        second.source = workload("a-much-longer-workload-name");
        second.drift = false;
        r.splits.push(second);
        let text = render_table(&r);
        let host_column = |needle: &str| {
            let line = text.lines().find(|l| l.contains(needle)).expect(needle);
            line.find("frontend.default").expect("host cell")
        };
        assert_eq!(
            host_column("default/loadgen"),
            host_column("a-much-longer"),
            "{text}"
        );
        assert_eq!(
            host_column("default/loadgen"),
            text.lines()
                .find(|l| l.contains("SOURCE"))
                .and_then(|l| l.find("HOST"))
                .expect("header")
        );
    }
}
