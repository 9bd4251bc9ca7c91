//! Each node's part of the splits (a cluster report joins several agents):
//! which node's clients send off the declared weights.

use std::fmt::Write as _;

use super::Esc;
use crate::report::NodeShare;
use crate::report::format;

/// Nothing at all in one agent's report, which has no node rows.
pub(super) fn section(out: &mut String, nodes: &[NodeShare]) {
    if nodes.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<h2>Splits by node <span class=\"count\">({})</span></h2>",
        nodes.len()
    );
    out.push_str(
        "<table class=\"nodes\"><thead><tr><th>node</th><th>source</th><th>host:port</th>\
         <th>subset</th><th class=\"num\">observed</th><th class=\"num\">count</th></tr></thead><tbody>",
    );
    for row in nodes {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}:{}</td><td class=\"subset\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            Esc(&row.node),
            Esc(&row.source.to_string()),
            Esc(&row.host),
            row.port,
            Esc(row.subset.as_deref().unwrap_or("(whole host)")),
            format::percent(row.observed),
            row.count,
        );
    }
    out.push_str("</tbody></table>");
}
