//! `meshdrift explain` and `meshdrift check` on the shipped examples.

use std::path::PathBuf;
use std::process::Command;

fn examples(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(dir)
}

fn meshdrift(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshdrift"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn explain_json(dir: &str, from: &str, to: &str) -> serde_json::Value {
    let manifests = examples(dir);
    let (code, stdout, stderr) = meshdrift(&[
        "explain",
        "--manifests",
        manifests.to_str().unwrap(),
        "--from",
        from,
        "--to",
        to,
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn explain_frontend_is_a_50_50_istio_mutual_split() {
    let e = explain_json("frontend", "default/client", "frontend:80");
    assert_eq!(e["host"], "frontend.default.svc.cluster.local");
    assert_eq!(e["port"], 80);
    assert_eq!(e["protocol"], "http");
    assert_eq!(e["virtual_service"], "default/frontend");
    assert_eq!(e["route"]["kind"], "http");
    assert_eq!(e["route"]["index"], 0);
    assert_eq!(e["determinable"], true);
    assert_eq!(e["unit"], "request");
    let d = e["destinations"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    for (dest, subset, ip) in [(&d[0], "v1", "10.213.0.11"), (&d[1], "v2", "10.213.0.12")] {
        assert_eq!(dest["subset"], subset);
        assert_eq!(dest["weight"], 0.5);
        assert_eq!(dest["tls"]["mode"], "ISTIO_MUTUAL");
        assert_eq!(dest["tls"]["source"], "destination_rule");
        assert_eq!(dest["endpoints"][0]["ip"], ip);
        assert_eq!(dest["endpoints"][0]["port"], 8080);
        assert_eq!(dest["endpoints"][0]["expect"], "mtls");
        assert_eq!(dest["endpoints"][0]["peer_authentication"], "STRICT");
    }
}

#[test]
fn explain_text_has_one_line_per_destination_with_percentages() {
    let manifests = examples("frontend");
    let (code, stdout, _) = meshdrift(&[
        "explain",
        "--manifests",
        manifests.to_str().unwrap(),
        "--from",
        "10.213.0.10",
        "--to",
        "frontend.default.svc.cluster.local:80",
    ]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains('%')).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].contains("50.0%")
            && lines[0].contains("subset v1")
            && lines[0].contains("ISTIO_MUTUAL")
    );
}

#[test]
fn explain_canary_is_90_10() {
    let e = explain_json("canary", "shop/productpage", "reviews");
    let weights: Vec<f64> = e["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["weight"].as_f64().unwrap())
        .collect();
    assert_eq!(weights, vec![0.9, 0.1]);
    assert_eq!(e["destinations"][0]["tls"]["mode"], "AUTO");
    assert_eq!(e["destinations"][0]["tls"]["source"], "auto_mtls");
}

#[test]
fn explain_header_routes_is_indeterminate_for_ordinary_clients() {
    let e = explain_json("header-routes", "books/reviews", "ratings");
    assert_eq!(e["determinable"], false);
    assert!(e["reason"].as_str().unwrap().contains("end-user"));
    let tester = explain_json("header-routes", "books/tester", "ratings");
    assert_eq!(tester["determinable"], true);
    assert_eq!(tester["destinations"][0]["subset"], "v3");
}

#[test]
fn explain_tcp_routes_split_per_connection() {
    let e = explain_json("tcp-routes", "data/api", "postgres:5432");
    assert_eq!(e["protocol"], "tcp");
    assert_eq!(e["unit"], "connection");
    assert_eq!(e["destinations"][0]["weight"], 0.8);
    assert_eq!(e["destinations"][0]["endpoints"][0]["port"], 5432);
}

#[test]
fn explain_strict_mtls_flags_the_pod_without_sidecar() {
    let e = explain_json("strict-mtls", "payments/checkout", "ledger:7070");
    let endpoints = e["destinations"][0]["endpoints"].as_array().unwrap();
    let legacy = endpoints
        .iter()
        .find(|ep| ep["pod"] == "payments/ledger-legacy")
        .unwrap();
    assert_eq!(legacy["expect"], "plaintext");
    assert_eq!(legacy["peer_authentication"], "STRICT");
    assert!(legacy["conflict"].is_string());
    let metrics = explain_json("strict-mtls", "payments/checkout", "ledger:9090");
    assert_eq!(
        metrics["destinations"][0]["endpoints"][0]["peer_authentication"],
        "PERMISSIVE"
    );
}

#[test]
fn explain_reports_unknown_pods_and_hosts() {
    let manifests = examples("frontend");
    let m = manifests.to_str().unwrap();
    let (code, _, stderr) = meshdrift(&[
        "explain",
        "--manifests",
        m,
        "--from",
        "default/ghost",
        "--to",
        "frontend",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("default/ghost"), "{stderr}");
    let (code, _, stderr) = meshdrift(&[
        "explain",
        "--manifests",
        m,
        "--from",
        "default/client",
        "--to",
        "backend:80",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("backend"), "{stderr}");
}

#[test]
fn check_examples_are_clean() {
    for dir in [
        "frontend",
        "canary",
        "header-routes",
        "tcp-routes",
        "strict-mtls",
    ] {
        let manifests = examples(dir);
        let (code, stdout, _) = meshdrift(&[
            "check",
            "--manifests",
            manifests.to_str().unwrap(),
            "--output",
            "json",
        ]);
        assert_eq!(code, 0, "{dir}: {stdout}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            report["findings"].as_array().unwrap().len(),
            0,
            "{dir}: {stdout}"
        );
    }
}

#[test]
fn check_exits_1_on_errors_and_names_load_problems() {
    let dir = std::env::temp_dir().join(format!("meshdrift-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v, namespace: default}\nspec:\n  hosts: [x]\n  http:\n    - route: [{destination: {host: missing}}]\n---\nkind: [\n",
    )
    .unwrap();
    let (code, stdout, _) = meshdrift(&["check", "--manifests", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("IST0101"), "{stdout}");
    assert!(
        stdout.contains("MD0001") && stdout.contains("document 2"),
        "{stdout}"
    );
}
