//! The Grafana dashboard `deploy/grafana/meshdrift.json`: it follows
//! Grafana's dashboard model (panels, layout, data source, template
//! variables), and every query of every panel, and of every template
//! variable, returns series from a real Prometheus that scrapes the agent in
//! the demo's drift scenario and evaluates the shipped rules. The first test
//! reads the file only; the second needs root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshdrift_e2e::privileged;
use meshdrift_lab::{
    meshdrift_bin,
    prometheus::Prometheus,
    scenario::{Frontend, FrontendConfig, Inventory},
};
use serde_json::{Value, json};

const DASHBOARD: &str = "deploy/grafana/meshdrift.json";
/// Grafana's dashboard schema the file is written in (Grafana 12).
const SCHEMA_VERSION: u64 = 41;
const GRID_COLUMNS: u64 = 24;
const PANEL_TYPES: [&str; 4] = ["row", "timeseries", "stat", "table"];
/// What Grafana's interval variables stand for when the test runs a query.
const BUILTINS: [(&str, &str); 4] = [
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__range", "5m"),
    ("__range_s", "300"),
];
/// What the demo's DestinationRule declares; the stale sidecar ignores it.
const MAX_REQUESTS_PER_CONNECTION: u32 = 50;
/// How long the queries may take, together, to return series once the
/// scenario's verdicts are in.
const QUERY_DEADLINE: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dashboard() -> Value {
    let path = workspace().join(DASHBOARD);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {DASHBOARD}: {e}"))
}

/// The data source every panel and query names: the `datasource` variable.
fn datasource() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

/// Every panel, rows and the panels of collapsed rows included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        if panel["type"] == "row" {
            panels.extend(panel["panels"].as_array().into_iter().flatten());
        }
    }
    panels
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("<untitled>")
}

fn variables(dashboard: &Value) -> &Vec<Value> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
}

/// A query variable's PromQL: the saved query editor's or a plain string.
fn variable_query(variable: &Value) -> &str {
    variable["query"]["query"]
        .as_str()
        .or_else(|| variable["query"].as_str())
        .unwrap_or_else(|| panic!("variable {} has no query", variable["name"]))
}

/// One PromQL query of the dashboard.
struct Query {
    /// The panel's title, or `variable NAME`.
    owner: String,
    ref_id: String,
    /// As written in the dashboard.
    expr: String,
}

fn panel_queries(dashboard: &Value) -> Vec<Query> {
    all_panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|target| Query {
                    owner: title(panel).to_owned(),
                    ref_id: target["refId"].as_str().unwrap_or_default().to_owned(),
                    expr: target["expr"].as_str().unwrap_or_default().to_owned(),
                })
        })
        .collect()
}

/// `label_values(SELECTOR, LABEL)` as the query whose series carry the values.
fn label_values_query(definition: &str) -> Result<String, String> {
    let inner = definition
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| format!("not label_values(SELECTOR, LABEL): {definition}"))?;
    let (selector, label) = inner
        .rsplit_once(',')
        .ok_or_else(|| format!("label_values without a selector: {definition}"))?;
    Ok(format!("count by ({}) ({})", label.trim(), selector.trim()))
}

fn variable_queries(dashboard: &Value) -> Vec<Query> {
    variables(dashboard)
        .iter()
        .filter(|variable| variable["type"] == "query")
        .map(|variable| {
            let name = variable["name"].as_str().unwrap_or_default();
            Query {
                owner: format!("variable {name}"),
                ref_id: String::new(),
                expr: label_values_query(variable_query(variable))
                    .unwrap_or_else(|e| panic!("variable {name}: {e}")),
            }
        })
        .collect()
}

/// `expr` with every variable replaced by what Grafana sends for it: the
/// query variables' "All" (`.*`), the interval variables' [`BUILTINS`]. A
/// reference to anything else is an error.
fn substitute(expr: &str, query_variables: &BTreeSet<String>) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {expr}"))?;
            // `${name:format}`: the format does not change "All".
            let name = braced[..end].split(':').next().unwrap_or_default();
            (name, end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            // A `$` of a regular expression, not a variable.
            out.push('$');
        } else if let Some((_, value)) = BUILTINS.iter().find(|(builtin, _)| *builtin == name) {
            out.push_str(value);
        } else if query_variables.contains(name) {
            out.push_str(".*");
        } else {
            return Err(format!("${name} is not a query variable of the dashboard"));
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

fn query_variable_names(dashboard: &Value) -> BTreeSet<String> {
    variables(dashboard)
        .iter()
        .filter(|variable| variable["type"] == "query")
        .filter_map(|variable| variable["name"].as_str().map(str::to_owned))
        .collect()
}

fn grid(panel: &Value) -> Result<(u64, u64, u64, u64), String> {
    let field = |name: &str| {
        panel["gridPos"][name]
            .as_u64()
            .ok_or_else(|| format!("gridPos.{name} is not a non-negative integer"))
    };
    Ok((field("x")?, field("y")?, field("w")?, field("h")?))
}

fn overlap(a: (u64, u64, u64, u64), b: (u64, u64, u64, u64)) -> bool {
    let (ax, ay, aw, ah) = a;
    let (bx, by, bw, bh) = b;
    ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah
}

/// Panels of one layer that cover the same cells.
fn overlaps<'a>(panels: &[&'a Value]) -> Vec<(&'a str, &'a str)> {
    let mut found = Vec::new();
    for (i, a) in panels.iter().enumerate() {
        for b in &panels[i + 1..] {
            if let (Ok(ga), Ok(gb)) = (grid(a), grid(b))
                && overlap(ga, gb)
            {
                found.push((title(a), title(b)));
            }
        }
    }
    found
}

/// Names of the recording rules `deploy/prometheus/rules.yaml` defines.
fn recorded_names() -> BTreeSet<String> {
    let path = workspace().join("deploy/prometheus/rules.yaml");
    let text = std::fs::read_to_string(&path).expect("reading the rules");
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("parsing the rules");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().expect("rules").iter())
        .filter_map(|rule| rule["record"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn dashboard_follows_grafanas_dashboard_model() {
    let dashboard = dashboard();
    let mut problems = Vec::new();
    let mut problem = |what: String| problems.push(what);

    if dashboard["uid"] != "meshdrift" || dashboard["title"] != "meshdrift" {
        problem(format!(
            "uid and title must be \"meshdrift\": {} {}",
            dashboard["uid"], dashboard["title"]
        ));
    }
    if dashboard["schemaVersion"].as_u64() != Some(SCHEMA_VERSION) {
        problem(format!(
            "schemaVersion {} (written for {SCHEMA_VERSION})",
            dashboard["schemaVersion"]
        ));
    }
    // Imported or provisioned as is: the data source is the `datasource`
    // variable, so there are no import-time inputs to fill in.
    if !dashboard["id"].is_null() {
        problem(format!(
            "id {} (an instance's id, not the file's)",
            dashboard["id"]
        ));
    }
    for key in ["__inputs", "__requires"] {
        if dashboard.get(key).is_some() {
            problem(format!("{key} present, yet the data source is a variable"));
        }
    }
    if dashboard.to_string().contains("${DS_") {
        problem("an import input ${DS_...} is referenced".to_owned());
    }

    // Template variables.
    let variables = variables(&dashboard);
    let source = variables.iter().find(|v| v["name"] == "datasource");
    match source {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        other => problem(format!(
            "no `datasource` variable of type datasource over prometheus: {other:?}"
        )),
    }
    let mut names = BTreeSet::new();
    for variable in variables {
        let name = variable["name"].as_str().unwrap_or_default();
        if !names.insert(name) {
            problem(format!("variable {name} defined twice"));
        }
        if variable["type"] != "query" {
            continue;
        }
        if variable["datasource"] != datasource() {
            problem(format!(
                "variable {name}'s datasource {}",
                variable["datasource"]
            ));
        }
        // The test stands for "All" with `.*`: so must Grafana.
        if variable["includeAll"] == true && variable["allValue"] != ".*" {
            problem(format!(
                "variable {name} includes All without allValue \".*\""
            ));
        }
        let query = variable_query(variable);
        if variable["definition"].as_str() != Some(query) {
            problem(format!(
                "variable {name}'s definition differs from its query"
            ));
        }
        if let Err(e) = label_values_query(query) {
            problem(format!("variable {name}: {e}"));
        }
        if let Err(e) = substitute(query, &query_variable_names(&dashboard)) {
            problem(format!("variable {name}: {e}"));
        }
    }

    // Panels.
    let query_variables = query_variable_names(&dashboard);
    let recorded = recorded_names();
    let mut ids = BTreeSet::new();
    let top: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    for panel in all_panels(&dashboard) {
        let name = title(panel);
        let kind = panel["type"].as_str().unwrap_or_default();
        if panel["title"].as_str().is_none_or(str::is_empty) {
            problem(format!("a {kind} panel without a title"));
        }
        if !PANEL_TYPES.contains(&kind) {
            problem(format!(
                "{name}: type {:?} is not one of {PANEL_TYPES:?}",
                panel["type"]
            ));
        }
        match panel["id"].as_u64() {
            Some(id) if !ids.insert(id) => problem(format!("{name}: id {id} used twice")),
            Some(_) => {}
            None => problem(format!("{name}: no numeric id")),
        }
        match grid(panel) {
            Ok((x, _, w, h)) => {
                if w == 0 || h == 0 || x + w > GRID_COLUMNS {
                    problem(format!(
                        "{name}: gridPos {} leaves the {GRID_COLUMNS}-column grid",
                        panel["gridPos"]
                    ));
                }
            }
            Err(e) => problem(format!("{name}: {e}")),
        }
        if kind == "row" {
            let children = panel["panels"].as_array();
            if !panel["collapsed"].is_boolean() || children.is_none() {
                problem(format!("row {name}: needs collapsed and panels"));
            }
            if panel["collapsed"] == false && children.is_some_and(|c| !c.is_empty()) {
                problem(format!(
                    "row {name} is open but holds panels (an open row's panels follow it)"
                ));
            }
            if panel["gridPos"]["w"] != GRID_COLUMNS || panel["gridPos"]["h"] != 1 {
                problem(format!("row {name}: gridPos {}", panel["gridPos"]));
            }
            continue;
        }
        if panel["datasource"] != datasource() {
            problem(format!("{name}: datasource {}", panel["datasource"]));
        }
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problem(format!("{name}: no query"));
        }
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            let ref_id = target["refId"].as_str().unwrap_or_default();
            if ref_id.is_empty() || !ref_ids.insert(ref_id) {
                problem(format!("{name}: refId {ref_id:?} missing or repeated"));
            }
            if !target["datasource"].is_null() && target["datasource"] != datasource() {
                problem(format!(
                    "{name} [{ref_id}]: datasource {}",
                    target["datasource"]
                ));
            }
            let expr = target["expr"].as_str().unwrap_or_default();
            if expr.trim().is_empty() {
                problem(format!("{name} [{ref_id}]: empty expr"));
                continue;
            }
            if let Err(e) = substitute(expr, &query_variables) {
                problem(format!("{name} [{ref_id}]: {e}"));
            }
            // Range windows follow the dashboard: Grafana's rate interval,
            // or the time range for totals over it.
            for window in expr.split('[').skip(1) {
                let window = window.split(']').next().unwrap_or_default();
                if window != "$__rate_interval" && window != "$__range" {
                    problem(format!(
                        "{name} [{ref_id}]: range [{window}] is neither $__rate_interval nor $__range"
                    ));
                }
            }
            for (at, _) in expr.match_indices("meshdrift:") {
                let rule: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                if !recorded.contains(&rule) {
                    problem(format!(
                        "{name} [{ref_id}]: {rule} is not a recording rule of deploy/prometheus/rules.yaml"
                    ));
                }
            }
            // The agents' own series are selected by their scrape job, as
            // in the shipped rules.
            for prefix in ["meshdrift_", "process_", "up{"] {
                for (at, _) in expr.match_indices(prefix) {
                    let preceded = expr[..at]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
                    if preceded {
                        continue;
                    }
                    let selector = &expr[at..];
                    let labels = selector
                        .find('{')
                        .filter(|&brace| {
                            selector[..brace]
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                        })
                        .map(|brace| &selector[brace..]);
                    if !labels.is_some_and(|l| l.starts_with("{job=\"meshdrift\"")) {
                        problem(format!(
                            "{name} [{ref_id}]: a selector without job=\"meshdrift\" at {}",
                            &selector[..selector.len().min(60)]
                        ));
                    }
                }
            }
        }
    }

    // Layout: nothing overlaps on the page, nor inside a collapsed row,
    // whose panels sit below it.
    for (a, b) in overlaps(&top) {
        problem(format!("panels {a:?} and {b:?} overlap"));
    }
    for row in top.iter().filter(|p| p["type"] == "row") {
        let children: Vec<&Value> = row["panels"].as_array().into_iter().flatten().collect();
        for (a, b) in overlaps(&children) {
            problem(format!(
                "panels {a:?} and {b:?} of row {} overlap",
                title(row)
            ));
        }
        let row_y = grid(row).map_or(0, |(_, y, _, _)| y);
        for child in children {
            if grid(child).is_ok_and(|(_, y, _, _)| y <= row_y) {
                problem(format!(
                    "{} is not below its row {}",
                    title(child),
                    title(row)
                ));
            }
        }
    }

    assert!(
        problems.is_empty(),
        "{DASHBOARD} breaks Grafana's dashboard model:\n{}",
        problems.join("\n")
    );
}

/// What one query returned: how many series, and the first one's labels.
struct Answer {
    series: usize,
    first: Value,
}

#[test]
fn every_dashboard_query_returns_series_in_the_drift_scenario() {
    let _slot = privileged();
    let dashboard = dashboard();
    let query_variables = query_variable_names(&dashboard);
    let queries: Vec<Query> = panel_queries(&dashboard)
        .into_iter()
        .chain(variable_queries(&dashboard))
        .collect();
    assert!(queries.len() >= 20, "only {} queries", queries.len());

    // The demo's drift scenario: a stale 80/20 sidecar against the declared
    // 50/50 that reuses its connections past the declared
    // maxRequestsPerConnection, and plaintext from a pod without a sidecar;
    // the agent installed with the chart behind the cluster's
    // authentication on the lab's control plane, as the demo runs it.
    let frontend = Frontend::start(FrontendConfig {
        inventory: Inventory::KUBERNETES,
        auth: true,
        legacy_plaintext: true,
        declared_max_requests_per_connection: Some(MAX_REQUESTS_PER_CONNECTION),
        ..FrontendConfig::new(
            workspace().join("deploy/examples/frontend"),
            meshdrift_bin(),
            (80, 20),
        )
    })
    .expect("starting the frontend scenario");
    // The shipped rules as they are: the dashboard reads their recordings
    // and the alerts they raise. It scrapes with its service account's token.
    let prometheus = Prometheus::start_with_token(
        &frontend.lab.dir().join("prometheus"),
        frontend.agent_listen,
        &[workspace().join("deploy/prometheus/rules.yaml")],
        frontend.agent_token_file.as_deref(),
    )
    .expect("starting Prometheus");
    frontend.send(600, |_, _| {}).expect("traffic");
    let flagged = |report: &Value, list: &str, flag: &str| {
        report[list]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|row| row[flag] == true))
    };
    let (report, settled) = frontend
        .wait_report(Duration::from_secs(60), |report| {
            flagged(report, "splits", "drift")
                && flagged(report, "transport", "violation")
                && report["policies"]
                    .as_array()
                    .is_some_and(|rows| rows.iter().any(|row| row["verdict"] == "violation"))
                && report["bypass"]
                    .as_array()
                    .is_some_and(|rows| !rows.is_empty())
        })
        .expect("the agent's report");
    assert!(
        settled,
        "the scenario's drift, violation, traffic-policy violation and bypass were not all \
         reported within 60 s: {report:#}"
    );

    // Each query, as Grafana would send it with every variable at "All",
    // until it returns series or the deadline passes.
    let substituted: Vec<String> = queries
        .iter()
        .map(|query| {
            substitute(&query.expr, &query_variables)
                .unwrap_or_else(|e| panic!("{} [{}]: {e}", query.owner, query.ref_id))
        })
        .collect();
    let mut answers: BTreeMap<usize, Answer> = BTreeMap::new();
    let mut last_error: BTreeMap<usize, String> = BTreeMap::new();
    let deadline = Instant::now() + QUERY_DEADLINE;
    loop {
        for (index, expr) in substituted.iter().enumerate() {
            if answers.contains_key(&index) {
                continue;
            }
            match prometheus.query(expr) {
                Ok(series) if !series.is_empty() => {
                    answers.insert(
                        index,
                        Answer {
                            series: series.len(),
                            first: series[0]["metric"].clone(),
                        },
                    );
                    last_error.remove(&index);
                }
                Ok(_) => {}
                Err(e) => {
                    last_error.insert(index, e.to_string());
                }
            }
        }
        if answers.len() == queries.len() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    let mut empty = Vec::new();
    for (index, query) in queries.iter().enumerate() {
        let what = if query.ref_id.is_empty() {
            query.owner.clone()
        } else {
            format!("{} [{}]", query.owner, query.ref_id)
        };
        match answers.get(&index) {
            Some(answer) => eprintln!(
                "series {:>3}  {what}  (first: {})",
                answer.series, answer.first
            ),
            None => {
                eprintln!("EMPTY       {what}");
                let error = last_error
                    .get(&index)
                    .map(|e| format!("\n    error: {e}"))
                    .unwrap_or_default();
                empty.push(format!(
                    "{what} returned no series within {QUERY_DEADLINE:?}\n    query: {}\n    as sent: {}{error}",
                    query.expr.replace('\n', " "),
                    substituted[index].replace('\n', " ")
                ));
            }
        }
    }
    assert!(
        empty.is_empty(),
        "{} of {} dashboard queries returned nothing against the drift scenario's Prometheus:\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );
}
