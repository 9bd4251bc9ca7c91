//! The node rows of a cluster report as a table: each node's share of each
//! split's subsets, so a node whose clients route off the weights stands out.

use super::report::Table;
use super::terminal::TerminalText;
use crate::report::format;
use crate::report::{NodeShare, Report};

/// Nothing at all for one agent's report, which has no node rows.
pub(super) fn render(out: &mut TerminalText, report: &Report) {
    if report.nodes.is_empty() {
        return;
    }
    out.blank();
    out.line(format_args!("SPLITS BY NODE ({})", report.nodes.len()));
    let mut table = Table::new(["NODE", "SOURCE", "HOST:PORT", "SUBSET", "OBSERVED", "COUNT"]);
    let mut rows: Vec<&NodeShare> = report.nodes.iter().collect();
    rows.sort_by(|a, b| {
        (&a.source, &a.host, a.port, &a.node, &a.subset)
            .cmp(&(&b.source, &b.host, b.port, &b.node, &b.subset))
    });
    for row in rows {
        table.row([
            row.node.clone(),
            row.source.to_string(),
            format!("{}:{}", row.host, row.port),
            row.subset
                .clone()
                .unwrap_or_else(|| "(whole host)".to_owned()),
            format::percent(row.observed),
            row.count.to_string(),
        ]);
    }
    table.render(out);
}
