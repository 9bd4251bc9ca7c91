//! The page's "Traffic policies" section: each DestinationRule setting
//! checked against what the client proxies really did, violations first.

use std::fmt::Write as _;

use super::Esc;
use crate::report::{PolicyOutcome, PolicyVerdict};

pub fn section(out: &mut String, policies: &[PolicyVerdict]) {
    let _ = write!(
        out,
        "<h2>Traffic policies <span class=\"count\">({})</span></h2>",
        policies.len()
    );
    if policies.is_empty() {
        out.push_str(
            "<p class=\"empty\">No client proxy connection to a DestinationRule's hosts in the window.</p>",
        );
        return;
    }
    out.push_str(
        "<p class=\"note\">DestinationRule load balancing, connection pools, outlier detection \
         and TLS origination, judged per client pod from the connections the kernel saw. \
         <i>untested</i> says why no verdict is possible.</p>\
         <table><thead><tr><th>source</th><th>host:port</th><th>subset</th><th>check</th>\
         <th>declared</th><th>observed</th><th>verdict</th><th class=\"num\">samples</th></tr></thead><tbody>",
    );
    let mut ordered: Vec<&PolicyVerdict> = policies.iter().collect();
    ordered.sort_by_key(|p| rank(p.verdict));
    for policy in ordered {
        let (row, badge) = match policy.verdict {
            PolicyOutcome::Violation => (" class=\"row-violation\"", "violation"),
            PolicyOutcome::Ok => ("", "ok"),
            PolicyOutcome::Untested => ("", "untested"),
        };
        let _ = write!(
            out,
            "<tr{row}><td>{}</td><td>{}:{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>\
             <td><span class=\"badge {badge}\">{}</span> {}</td><td class=\"num\">{}</td></tr>",
            Esc(&policy.source.to_string()),
            Esc(&policy.host),
            policy.port,
            Esc(policy.subset.as_deref().unwrap_or("—")),
            policy.check.as_str(),
            Esc(&policy.declared),
            Esc(&policy.observed),
            badge.to_ascii_uppercase(),
            Esc(&policy.reason),
            policy.samples,
        );
    }
    out.push_str("</tbody></table>");
}

fn rank(outcome: PolicyOutcome) -> u8 {
    match outcome {
        PolicyOutcome::Violation => 0,
        PolicyOutcome::Ok => 1,
        PolicyOutcome::Untested => 2,
    }
}
