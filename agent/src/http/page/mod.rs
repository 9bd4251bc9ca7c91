//! The HTML report page (`GET /`): one self-contained document, no scripts and no
//! external assets, so it renders the same behind any proxy and in air-gapped
//! clusters. Problems come first: drifting splits, violating transports.

use std::collections::BTreeMap;
use std::fmt::Write as _;

mod bars;
mod escape;
mod nodes;
mod pods;
mod policies;

pub use escape::Esc;

use crate::findings::Severity;
use crate::observation::{TransportOutcome, judge_transport};
use crate::report::format;
use crate::report::{
    AgentHealth, AmbientRow, BypassRow, Finding, Report, SplitVerdict, TransportVerdict,
    UnexpectedDestination,
};
use crate::wire::Transport;

const STYLE: &str = include_str!("style.css");

/// Renders the whole page for `report`.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let title = format!("meshdrift · {}", report.node);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>",
        Esc(&title)
    );
    header(&mut out, report);
    out.push_str("<main>");
    splits(&mut out, &report.splits);
    pods::section(&mut out, &report.pods);
    nodes::section(&mut out, &report.nodes);
    transport(&mut out, &report.transport);
    unexpected(&mut out, &report.unexpected);
    bypass(&mut out, &report.bypass);
    ambient(&mut out, &report.ambient);
    policies::section(&mut out, &report.policies);
    findings(&mut out, &report.findings);
    health(&mut out, &report.agent);
    out.push_str("</main>");
    out.push_str(
        "<footer>Data: <a href=\"report\">/report</a> (JSON) · <a href=\"metrics\">/metrics</a> \
         (OpenMetrics). Reload for a fresh report.</footer></body></html>\n",
    );
    out
}

fn header(out: &mut String, report: &Report) {
    let drifting = report.splits.iter().filter(|s| s.drift).count();
    let violations = report.transport.iter().filter(|t| t.violation).count();
    let mismatches = report
        .transport
        .iter()
        .filter(|t| t.mismatch && !t.violation)
        .count();
    let errors = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let lost: u64 = report.agent.lost_events.values().sum();
    let _ = write!(
        out,
        "<header><h1>meshdrift report<small>declared mesh policy against kernel-observed traffic</small></h1>\
         <div class=\"meta\">node <b>{}</b> · window <b>{}</b> · generated <b>{}</b> · agent <b>{}</b></div>",
        Esc(&report.node),
        format::duration(report.window_seconds),
        Esc(&report.generated_at),
        Esc(&report.agent.version),
    );
    out.push_str("<div class=\"summary\">");
    tile(
        out,
        drifting,
        report.splits.len(),
        "splits drifting",
        drifting > 0,
    );
    tile(
        out,
        violations,
        report.transport.len(),
        "mTLS violations",
        violations > 0,
    );
    if mismatches > 0 {
        let _ = write!(
            out,
            "<div class=\"tile warn\"><span class=\"n\">{mismatches}</span>transport mismatches</div>"
        );
    }
    tile(
        out,
        report.unexpected.len(),
        0,
        "unexpected destinations",
        !report.unexpected.is_empty(),
    );
    tile(
        out,
        report.bypass.len(),
        0,
        "bypassing the mesh",
        !report.bypass.is_empty(),
    );
    let policy_violations = report
        .policies
        .iter()
        .filter(|p| p.verdict == crate::report::PolicyOutcome::Violation)
        .count();
    tile(
        out,
        policy_violations,
        report.policies.len(),
        "traffic-policy violations",
        policy_violations > 0,
    );
    tile(
        out,
        errors,
        report.findings.len(),
        "config errors",
        errors > 0,
    );
    tile(out, lost as usize, 0, "lost events", lost > 0);
    out.push_str("</div></header>");
}

fn tile(out: &mut String, n: usize, of: usize, what: &str, bad: bool) {
    let class = if bad { "bad" } else { "good" };
    let of = if of > 0 {
        format!(" <small>of {of}</small>")
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "<div class=\"tile {class}\"><span class=\"n\">{n}{of}</span>{}</div>",
        Esc(what)
    );
}

/// The badge class and word for a split verdict.
pub(super) fn split_status(split: &SplitVerdict) -> (&'static str, &'static str) {
    if split.drift {
        ("drift", "DRIFT")
    } else if split.tested() {
        ("ok", "OK")
    } else {
        ("untested", "NOT TESTED")
    }
}

fn splits(out: &mut String, splits: &[SplitVerdict]) {
    let _ = write!(
        out,
        "<h2>Traffic splits <span class=\"count\">({})</span></h2>",
        splits.len()
    );
    if splits.is_empty() {
        out.push_str("<p class=\"empty\">No split observed in this window yet.</p>");
        return;
    }
    out.push_str(
        "<div class=\"legend\"><span><i class=\"l-decl\"></i>declared weight</span>\
         <span><i class=\"l-obs\"></i>observed share</span>\
         <span><i class=\"l-off\"></i>observed share off its declared weight</span>\
         <span><i class=\"l-ci\"></i>95% Wilson interval</span>\
         <span><i class=\"l-target\"></i>declared target</span></div>",
    );
    let mut ordered: Vec<&SplitVerdict> = splits.iter().collect();
    ordered.sort_by_key(|s| !s.drift);
    for split in ordered {
        split_card(out, split);
    }
}

fn split_card(out: &mut String, split: &SplitVerdict) {
    let (class, word) = split_status(split);
    let _ = write!(
        out,
        "<section class=\"card {class}\"><h3><span class=\"badge {class}\">{word}</span> {} \
         <span class=\"arrow\">→</span> {}:{}</h3>",
        Esc(&split.source.to_string()),
        Esc(&split.host),
        split.port
    );
    let _ = write!(out, "<div class=\"reason\">{}</div>", Esc(&split.reason));
    let _ = write!(
        out,
        "<div class=\"stats\">unit <b>{}</b> · samples <b>{}</b> · p-value <b>{}</b></div>",
        format::split_unit(split.unit, split.estimated),
        split.samples,
        Esc(&format::p_value(split.p_value)),
    );
    if let Some(evidence) = &split.evidence {
        let _ = write!(
            out,
            "<div class=\"stats\">sequential test: evidence <b>{:.1}</b> of <b>{:.1}</b> nats \
             over {} batches of {} s · anytime p-value <b>{}</b></div>",
            evidence.ln_statistic.max(0.0),
            evidence.ln_threshold,
            evidence.batches,
            evidence.batch_seconds,
            Esc(&format::p_value(Some(evidence.p_value))),
        );
    }
    out.push_str(
        "<table><thead><tr><th>subset</th><th>declared vs observed</th><th class=\"num\">declared</th>\
         <th class=\"num\">observed</th><th class=\"num\">95% interval</th><th class=\"num\">Δ</th>\
         <th class=\"num\">count</th></tr></thead><tbody>",
    );
    for share in &split.subsets {
        let outside = share.declared < share.ci_low || share.declared > share.ci_high;
        let off = split.drift && outside;
        let name = share.subset.as_deref().unwrap_or("(whole host)");
        let _ = write!(
            out,
            "<tr{}><td class=\"subset\">{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num obsval\">{}</td><td class=\"num\">{} – {}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            if off { " class=\"off\"" } else { "" },
            Esc(name),
            bars::subset_bar(share, off),
            format::percent(share.declared),
            format::percent(share.observed),
            format::percent(share.ci_low),
            format::percent(share.ci_high),
            format::points(share.observed - share.declared),
            share.count,
        );
    }
    out.push_str("</tbody></table></section>");
}

fn transport(out: &mut String, verdicts: &[TransportVerdict]) {
    let _ = write!(
        out,
        "<h2>Transport: expected against observed <span class=\"count\">({})</span></h2>",
        verdicts.len()
    );
    if verdicts.is_empty() {
        out.push_str(
            "<p class=\"empty\">No connection with a known expectation in this window.</p>",
        );
        return;
    }
    out.push_str("<table><thead><tr><th>source</th><th>host</th><th>subset</th><th>expected</th>");
    for t in Transport::ALL {
        let _ = write!(out, "<th class=\"num\">{t}</th>");
    }
    out.push_str("<th>verdict</th></tr></thead><tbody>");
    let mut ordered: Vec<&TransportVerdict> = verdicts.iter().collect();
    ordered.sort_by_key(|t| (!t.violation, !t.mismatch));
    for verdict in ordered {
        transport_row(out, verdict);
    }
    out.push_str("</tbody></table>");
}

fn transport_row(out: &mut String, verdict: &TransportVerdict) {
    let row_class = if verdict.violation {
        " class=\"row-violation\""
    } else if verdict.mismatch {
        " class=\"row-mismatch\""
    } else {
        ""
    };
    let expected = verdict.expected.map_or("unknown", |e| e.as_str());
    let _ = write!(
        out,
        "<tr{row_class}><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td>",
        Esc(&verdict.source.to_string()),
        Esc(&verdict.host),
        Esc(verdict.subset.as_deref().unwrap_or("—")),
        expected,
    );
    for t in Transport::ALL {
        let n = verdict.observed.get(t.as_str()).copied().unwrap_or(0);
        if n == 0 {
            out.push_str("<td class=\"num zero\">·</td>");
            continue;
        }
        let class = match judge_transport(verdict.expected, t) {
            TransportOutcome::Violation => "cell-violation",
            TransportOutcome::Mismatch => "cell-mismatch",
            TransportOutcome::Expected => "cell-ok",
            TransportOutcome::Neutral => "",
        };
        let _ = write!(out, "<td class=\"num {class}\">{n}</td>");
    }
    let verdict_cell = if verdict.violation {
        format!(
            "<span class=\"badge violation\">VIOLATION</span> {} plaintext",
            verdict.violations
        )
    } else if verdict.mismatch {
        format!(
            "<span class=\"badge mismatch\">MISMATCH</span> {}",
            verdict.mismatches
        )
    } else {
        "<span class=\"badge ok\">OK</span>".to_owned()
    };
    let _ = write!(out, "<td>{verdict_cell}</td></tr>");
}

fn unexpected(out: &mut String, destinations: &[UnexpectedDestination]) {
    let _ = write!(
        out,
        "<h2>Unexpected destinations <span class=\"count\">({})</span></h2>",
        destinations.len()
    );
    if destinations.is_empty() {
        out.push_str(
            "<p class=\"empty\">Every observed flow reached a destination its routes declare.</p>",
        );
        return;
    }
    out.push_str(
        "<table><thead><tr><th>source</th><th>host:port</th><th>reached</th><th>why unexpected</th>\
         <th class=\"num\">connections</th><th class=\"num\">requests</th></tr></thead><tbody>",
    );
    for d in destinations {
        let _ = write!(
            out,
            "<tr class=\"row-violation\"><td>{}</td><td>{}:{}</td><td><code>{}</code></td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            Esc(&d.source.to_string()),
            Esc(&d.host),
            d.port,
            Esc(&d.destination),
            Esc(&d.reason),
            d.connections,
            d.requests,
        );
    }
    out.push_str("</tbody></table>");
}

fn bypass(out: &mut String, rows: &[BypassRow]) {
    let _ = write!(
        out,
        "<h2>Bypassing the mesh <span class=\"count\">({})</span></h2>",
        rows.len()
    );
    if rows.is_empty() {
        out.push_str(
            "<p class=\"empty\">Every connection into the mesh passed through a sidecar.</p>",
        );
        return;
    }
    out.push_str(
        "<p class=\"note\">Connections no proxy carried, so no proxy reports them: the \
         destination's pod (and subset) is the one kube-proxy or the client picked, never the \
         VirtualService's split.</p>\
         <table><thead><tr><th>source</th><th>host:port</th><th>subset</th><th>why</th>\
         <th>transport</th><th class=\"num\">connections</th><th class=\"num\">requests</th></tr></thead><tbody>",
    );
    for row in rows {
        let _ = write!(
            out,
            "<tr class=\"row-violation\"><td>{}</td><td>{}:{}</td><td>{}</td>\
             <td><span class=\"badge bad\">BYPASS</span> {}</td><td><code>{}</code></td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            Esc(&row.source.to_string()),
            Esc(&row.destination.host),
            row.destination.port,
            Esc(row.destination.subset.as_deref().unwrap_or("—")),
            format::bypass_reason(row.reason),
            Esc(&row.transport),
            row.connections,
            row.requests,
        );
    }
    out.push_str("</tbody></table>");
}

/// Shown only when some client is in ambient mode: a sidecar mesh has no
/// such traffic, and an empty section would only be noise there.
fn ambient(out: &mut String, rows: &[AmbientRow]) {
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<h2>Ambient mode <span class=\"count\">({})</span></h2>\
         <p class=\"note\">Clients enrolled in Istio's ambient mode: no sidecar, ztunnel carries \
         their traffic (and a waypoint, if any, applies the VirtualService). Shown, not judged: \
         neither a bypass nor a transport violation, and no split verdict until meshdrift \
         verifies ztunnel and waypoints.</p>\
         <table><thead><tr><th>source</th><th>host:port</th><th>subset</th><th>mode</th>\
         <th>transport</th><th class=\"num\">connections</th><th class=\"num\">requests</th></tr></thead><tbody>",
        rows.len()
    );
    for row in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}:{}</td><td>{}</td>\
             <td><span class=\"badge info\">AMBIENT</span></td><td><code>{}</code></td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            Esc(&row.source.to_string()),
            Esc(&row.destination.host),
            row.destination.port,
            Esc(row.destination.subset.as_deref().unwrap_or("—")),
            Esc(&row.transport),
            row.connections,
            row.requests,
        );
    }
    out.push_str("</tbody></table>");
}

fn findings(out: &mut String, findings: &[Finding]) {
    let _ = write!(
        out,
        "<h2>Configuration findings <span class=\"count\">({})</span></h2>",
        findings.len()
    );
    if findings.is_empty() {
        out.push_str("<p class=\"empty\">No finding on the mesh configuration.</p>");
        return;
    }
    out.push_str(
        "<table><thead><tr><th>severity</th><th>code</th><th>resource</th><th>message</th></tr></thead><tbody>",
    );
    let mut ordered: Vec<&Finding> = findings.iter().collect();
    // Severity orders error, warning, info: the worst first.
    ordered.sort_by_key(|f| f.severity);
    for f in ordered {
        let class = f.severity.as_str();
        let _ = write!(
            out,
            "<tr><td><span class=\"badge {class}\">{}</span></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            Esc(&class.to_uppercase()),
            Esc(&f.code),
            Esc(&f.resource),
            Esc(&f.message),
        );
    }
    out.push_str("</tbody></table>");
}

fn health(out: &mut String, agent: &AgentHealth) {
    out.push_str("<h2>Agent health</h2><div class=\"health\">");
    let _ = write!(
        out,
        "<div class=\"card\"><h3>Agent</h3><dl><dt>version</dt><dd>{}</dd><dt>uptime</dt><dd>{}</dd>\
         <dt>flows tracked</dt><dd>{}</dd></dl></div>",
        Esc(&agent.version),
        format::duration(agent.uptime_seconds),
        agent.flows_tracked,
    );
    counts_card(
        out,
        "Lost events",
        "lost",
        &agent.lost_events,
        "none lost",
        true,
    );
    counts_card(out, "Inventory", "", &agent.inventory, "empty", false);
    counts_card(
        out,
        "Excluded flows",
        "",
        &agent.excluded_flows,
        "none",
        false,
    );
    out.push_str("</div>");
}

fn counts_card(
    out: &mut String,
    title: &str,
    class: &str,
    counts: &BTreeMap<String, u64>,
    empty: &str,
    nonzero_is_bad: bool,
) {
    let _ = write!(
        out,
        "<div class=\"card {class}\"><h3>{}</h3><dl>",
        Esc(title)
    );
    if counts.is_empty() {
        let _ = write!(out, "<dt>{}</dt><dd></dd>", Esc(empty));
    }
    for (key, n) in counts {
        let bad = if nonzero_is_bad && *n > 0 {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = write!(out, "<dt>{}</dt><dd{bad}>{n}</dd>", Esc(key));
    }
    out.push_str("</dl></div>");
}

#[cfg(test)]
mod tests;
