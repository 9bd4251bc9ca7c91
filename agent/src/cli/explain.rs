//! `meshdrift explain`: the declared expectation for one client and destination.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::terminal::TerminalText;
use super::{OutputFormat, output};
use crate::inventory::{Index, PodInfo, files};
use crate::model::traffic_policy::format_duration;
use crate::observation::{Unit, conduct::DeclaredTraffic};
use crate::policy::{DestinationExpectation, Expectation, Policies, TlsSource};

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Directory (or file) of Kubernetes and Istio manifests.
    #[arg(long, value_name = "DIR")]
    pub manifests: PathBuf,
    /// The client pod: NAMESPACE/POD, POD (namespace `default`) or its IP.
    #[arg(long, value_name = "NS/POD")]
    pub from: String,
    /// The destination: a Service FQDN or short name, with an optional Service port.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub to: String,
    /// Output format (`table` prints the same as `text`).
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

pub fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let outcome = files::load_dir(&args.manifests)?;
    for problem in &outcome.problems {
        output::warn(&format!("warning: {problem}"));
    }
    let policies = Policies::build(&outcome.objects);
    let index = Index::from_objects(outcome.objects);
    let client = find_client(&index, &args.from)?;
    let (host, port) = split_host_port(&args.to)?;
    let expectation = policies
        .expect(&index, client, host, port)
        .with_context(|| format!("cannot explain {} → {}", client.key(), args.to))?;
    let text = match args.output {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&expectation)?),
        OutputFormat::Text | OutputFormat::Table => render_text(&expectation),
    };
    output::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn find_client<'a>(index: &'a Index, from: &str) -> anyhow::Result<&'a PodInfo> {
    if let Ok(ip) = from.parse::<IpAddr>() {
        return index
            .pod_by_ip(ip)
            .with_context(|| format!("no pod with IP {ip} in the manifests"));
    }
    let (namespace, name) = from.split_once('/').unwrap_or(("default", from));
    if let Some(pod) = index.pod_by_name(namespace, name) {
        return Ok(pod);
    }
    let known: Vec<String> = index.pods().take(10).map(PodInfo::key).collect();
    bail!(
        "no pod {namespace}/{name} in the manifests (pods include: {})",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )
}

/// `host`, `host:port`; an IPv6 literal needs brackets to carry a port.
fn split_host_port(to: &str) -> anyhow::Result<(&str, Option<u16>)> {
    if let Some(rest) = to.strip_prefix('[')
        && let Some((host, port)) = rest.split_once("]:")
    {
        let port = port
            .parse()
            .with_context(|| format!("bad port in {to:?}"))?;
        return Ok((host, Some(port)));
    }
    match to.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port
                .parse::<u16>()
                .with_context(|| format!("bad port {port:?} in {to:?}"))?;
            Ok((host, Some(port)))
        }
        _ => Ok((to, None)),
    }
}

/// The person-first rendering: one line per destination with its share and
/// transport, then its endpoints.
pub fn render_text(e: &Expectation) -> String {
    let mut out = TerminalText::default();
    let unit = match e.unit {
        Unit::Request => "per request",
        Unit::Connection => "per connection",
    };
    out.line(format_args!(
        "{} → {}:{} ({}, split {unit})",
        e.client,
        e.host,
        e.port,
        e.protocol.as_str()
    ));
    match (&e.virtual_service, &e.route) {
        (Some(vs), Some(route)) => {
            let name = route
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            out.line(format_args!(
                "VirtualService {vs}, {} route #{}{name}",
                route.kind.as_str(),
                route.index
            ));
        }
        (Some(vs), None) => {
            out.line(format_args!("VirtualService {vs}"));
        }
        (None, _) => {
            out.line(format_args!(
                "No VirtualService: all traffic goes to the host itself"
            ));
        }
    }
    if !e.determinable {
        out.line(format_args!(
            "NOT DETERMINABLE from L4: {}",
            e.reason.as_deref().unwrap_or("unknown")
        ));
        for candidate in &e.candidates {
            let condition = candidate
                .condition
                .as_deref()
                .map(|c| format!("if {c}"))
                .unwrap_or_else(|| "otherwise".to_owned());
            out.line(format_args!(
                "  {} route #{} {condition}:",
                candidate.route.kind.as_str(),
                candidate.route.index
            ));
            for d in &candidate.destinations {
                render_destination(&mut out, d, "    ");
            }
        }
        return out.into_string();
    }
    if let Some(reason) = &e.reason {
        out.line(format_args!("Note: {reason}"));
    }
    for d in &e.destinations {
        render_destination(&mut out, d, "");
    }
    if e.destinations.iter().any(|d| !d.endpoints.is_empty()) {
        out.line(format_args!("(expect: what the client sidecar sends to each pod; server mTLS: the PeerAuthentication mode the pod enforces)"));
    }
    out.into_string()
}

fn render_destination(out: &mut TerminalText, d: &DestinationExpectation, indent: &str) {
    let subset = d
        .subset
        .as_deref()
        .map(|s| format!(" subset {s}"))
        .unwrap_or_default();
    let source = match (&d.tls.detail, d.tls.source) {
        (Some(detail), _) => format!(" ({detail})"),
        (None, TlsSource::AutoMtls) => {
            " (auto mTLS: mTLS to pods with a sidecar whose own PeerAuthentication is not DISABLE, plaintext to the others)".to_owned()
        }
        (None, TlsSource::DestinationRule) => String::new(),
    };
    out.line(format_args!(
        "{indent}{:>6.1}%  {}:{}{subset}  tls {}{source}",
        d.weight * 100.0,
        d.host,
        d.port,
        d.tls.mode.as_str(),
    ));
    for line in traffic_policy(&d.traffic) {
        out.line(format_args!("{indent}         {line}"));
    }
    if let Some(note) = &d.note {
        out.line(format_args!("{indent}         ! {note}"));
    }
    if d.endpoints.is_empty() && d.note.is_none() {
        out.line(format_args!("{indent}         (no endpoints)"));
    }
    for ep in &d.endpoints {
        let address = match ep.port {
            Some(port) if ep.ip.is_ipv6() => format!("[{}]:{port}", ep.ip),
            Some(port) => format!("{}:{port}", ep.ip),
            None => ep.ip.to_string(),
        };
        out.line(format_args!(
            "{indent}         {address:<22} {:<28} expect {:<9} server mTLS {}{}",
            ep.pod.as_deref().unwrap_or("(unknown pod)"),
            ep.expect.as_str(),
            ep.peer_authentication.as_str(),
            ep.conflict
                .as_deref()
                .map(|c| format!("  ! {c}"))
                .unwrap_or_default()
        ));
    }
}

/// The cluster's traffic policy beyond TLS, as the agent checks it, and
/// where in the DestinationRule each setting comes from.
fn traffic_policy(traffic: &DeclaredTraffic) -> Vec<String> {
    let mut settings = vec![format!(
        "load balancing {}",
        traffic.load_balancer.describe()
    )];
    if let Some(n) = traffic.max_connections {
        settings.push(format!("maxConnections {n}"));
    }
    if let Some(n) = traffic.max_requests_per_connection {
        settings.push(format!("maxRequestsPerConnection {n}"));
    }
    if let Some(idle) = traffic.idle_timeout {
        settings.push(format!("idleTimeout {}", format_duration(idle)));
    }
    if let Some(ejection) = &traffic.outlier_detection {
        settings.push(match ejection.consecutive_errors {
            Some(n) => format!(
                "outlier ejection after {n} consecutive failures ({}) for {}",
                ejection.limit_from,
                format_duration(ejection.base_ejection_time)
            ),
            None => format!(
                "outlier detection without a limit on connection failures ({})",
                ejection.limit_from
            ),
        });
    }
    if let Some(origination) = &traffic.tls_origination {
        settings.push(format!(
            "originates {} TLS with SNI {}{}",
            origination.mode,
            origination.sni,
            if origination.sni_declared {
                ""
            } else {
                " (sni unset: the host)"
            }
        ));
    }
    let mut lines = vec![format!("traffic policy: {}", settings.join("; "))];
    for (field, at) in &traffic.defined_at {
        lines.push(format!("  {field} from {at}"));
    }
    lines
}
