//! The page's "Client pods" section: each client pod's own split, the
//! drifting pods first — the proxies to check and restart.

use std::fmt::Write as _;

use super::{Esc, split_status};
use crate::report::{PodSplitVerdict, format};

/// Pods shown at most; the JSON report has them all.
const MAX_ROWS: usize = 50;

pub fn section(out: &mut String, pods: &[PodSplitVerdict]) {
    let drifting = pods.iter().filter(|p| p.split.drift).count();
    let _ = write!(
        out,
        "<h2>Client pods <span class=\"count\">({} judged, {drifting} drifting)</span></h2>",
        pods.len()
    );
    if pods.is_empty() {
        out.push_str("<p class=\"empty\">No client pod's split observed in this window yet.</p>");
        return;
    }
    out.push_str(
        "<p class=\"note\">Each pod's own split, judged alone: a pod runs on one node, so this \
         agent sees all of its traffic. A drifting pod among healthy ones of the same workload \
         has a stale proxy: check it with <code>istioctl proxy-status</code> and restart it.</p>\
         <table><thead><tr><th>pod</th><th>host:port</th><th>verdict</th><th>shares (observed / declared)</th>\
         <th class=\"num\">samples</th></tr></thead><tbody>",
    );
    let mut ordered: Vec<&PodSplitVerdict> = pods.iter().collect();
    ordered.sort_by_key(|p| !p.split.drift);
    for pod in ordered.iter().take(MAX_ROWS) {
        let split = &pod.split;
        let (class, word) = split_status(split);
        let shares: Vec<String> = split
            .subsets
            .iter()
            .map(|share| {
                format!(
                    "{} {} / {}",
                    share.subset.as_deref().unwrap_or("(host)"),
                    format::percent(share.observed),
                    format::percent(share.declared)
                )
            })
            .collect();
        let _ = write!(
            out,
            "<tr{}><td>{}</td><td>{}:{}</td><td><span class=\"badge {class}\">{word}</span> {}</td>\
             <td>{}</td><td class=\"num\">{}</td></tr>",
            if split.drift {
                " class=\"row-violation\""
            } else {
                ""
            },
            Esc(&pod.pod),
            Esc(&split.host),
            split.port,
            Esc(&split.reason),
            Esc(&shares.join(" · ")),
            split.samples,
        );
    }
    out.push_str("</tbody></table>");
    if pods.len() > MAX_ROWS {
        let _ = write!(
            out,
            "<p class=\"note\">… and {} more in <a href=\"report\">/report</a>.</p>",
            pods.len() - MAX_ROWS
        );
    }
}
