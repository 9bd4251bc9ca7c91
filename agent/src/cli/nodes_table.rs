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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::Workload;

    fn row(node: &str, subset: &str, count: u64, observed: f64) -> NodeShare {
        NodeShare {
            node: node.into(),
            source: Workload {
                namespace: "shop".into(),
                name: "web".into(),
            },
            host: "api".into(),
            port: 80,
            subset: Some(subset.into()),
            count,
            observed,
        }
    }

    fn report(nodes: Vec<NodeShare>) -> Report {
        let mut report: Report = serde_json::from_value(serde_json::json!({
            "generated_at": "2026-01-01T00:00:00Z", "node": "cluster", "window_seconds": 60,
            "splits": [], "transport": [], "unexpected": [], "findings": [],
            "agent": {"version": "", "uptime_seconds": 0, "lost_events": {},
                      "flows_tracked": 0, "inventory": {}, "excluded_flows": {}}
        }))
        .unwrap();
        report.nodes = nodes;
        report
    }

    #[test]
    fn one_row_per_node_and_subset_ordered_by_split_then_node() {
        let mut out = TerminalText::default();
        render(
            &mut out,
            &report(vec![
                row("node-2", "v1", 90, 0.9),
                row("node-1", "v1", 50, 0.5),
            ]),
        );
        let text = out.into_string();
        assert!(text.contains("SPLITS BY NODE (2)"), "{text}");
        let first = text.find("node-1").unwrap();
        let second = text.find("node-2").unwrap();
        assert!(first < second, "{text}");
        assert!(text.contains("90.0%"), "{text}");
    }

    #[test]
    fn an_agent_report_has_no_node_section() {
        let mut out = TerminalText::default();
        render(&mut out, &report(Vec::new()));
        assert_eq!(out.into_string(), "");
    }
}
