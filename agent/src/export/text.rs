//! OpenMetrics text → Prometheus text format 0.0.4.
//!
//! Prometheus scrapes OpenMetrics, but `promtool check metrics` and other 0.0.4
//! parsers read a counter family `x` with samples `x_total` as two families, the
//! second without help or type. In 0.0.4 the family is named like its samples, so
//! this renames counter families to `x_total` and drops the OpenMetrics-only lines
//! (`# UNIT`, `# EOF`). It covers what [`Metrics`](super::Metrics) registers:
//! counters and gauges without exemplars or created timestamps.

/// Rewrites an OpenMetrics exposition produced by `prometheus-client` as
/// Prometheus text format 0.0.4.
pub fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // prometheus-client writes HELP before TYPE; the HELP name can only be fixed
    // once the TYPE says whether the family is a counter.
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, pending_help.take(), None);
            pending_help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = prometheus_family(name, kind);
            flush_help(&mut out, pending_help.take(), Some(&name));
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            flush_help(&mut out, pending_help.take(), None);
            out.push_str(line);
            out.push('\n');
        }
    }
    flush_help(&mut out, pending_help, None);
    out
}

/// The 0.0.4 family name and type for an OpenMetrics family.
fn prometheus_family(name: &str, kind: &str) -> (String, &'static str) {
    match kind {
        "counter" => (format!("{name}_total"), "counter"),
        "info" => (format!("{name}_info"), "gauge"),
        "stateset" => (name.to_owned(), "gauge"),
        "gauge" => (name.to_owned(), "gauge"),
        "histogram" => (name.to_owned(), "histogram"),
        "summary" => (name.to_owned(), "summary"),
        _ => (name.to_owned(), "untyped"),
    }
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>, renamed: Option<&str>) {
    if let Some((name, text)) = help {
        out.push_str("# HELP ");
        out.push_str(renamed.unwrap_or(name));
        out.push(' ');
        out.push_str(text);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_families_take_the_sample_name() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{a=\"b\"} 3\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(om),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{a=\"b\"} 3\n"
        );
    }

    #[test]
    fn gauges_pass_through_and_unit_and_eof_lines_go() {
        let om = "# HELP x_seconds Age.\n# TYPE x_seconds gauge\n# UNIT x_seconds seconds\nx_seconds 1.5\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(om),
            "# HELP x_seconds Age.\n# TYPE x_seconds gauge\nx_seconds 1.5\n"
        );
    }

    #[test]
    fn info_families_become_gauges_named_like_their_samples() {
        let om =
            "# HELP x_build Build.\n# TYPE x_build info\nx_build_info{version=\"1\"} 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(om),
            "# HELP x_build_info Build.\n# TYPE x_build_info gauge\nx_build_info{version=\"1\"} 1\n"
        );
    }
}
