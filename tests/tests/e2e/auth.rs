//! `--auth kubernetes` on the real API server: the chart installed with
//! `auth.mode=kubernetes`, the agent reviewing callers' tokens (TokenReview)
//! and grants (SubjectAccessReview on the path as a non-resource URL): 401
//! without a valid token, 403 for a service account without the grant, 200
//! for one with it; the probes' endpoints open; `meshdrift report` with
//! `--token-file`; a real Prometheus scraping with its own service
//! account's token. And HTTPS from a certificate file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use meshdrift_e2e::privileged;
use meshdrift_lab::CertAuthority;
use meshdrift_lab::prometheus::Prometheus;
use meshdrift_lab::{
    Lab,
    cluster::{AGENT_PATHS, Cluster, ClusterConfig, Upstream},
    meshdrift_bin,
};
use serde_json::Value;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `GET url` with an optional bearer token: the status and body.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, body)
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("writing a file");
    path
}

/// Prometheus's view of its one target: health and last error.
fn target_health(prometheus: &Prometheus) -> (String, String) {
    let targets = meshdrift_lab::prometheus::get_json(
        &format!("{}/api/v1/targets", prometheus.url()),
        "targets",
    )
    .expect("Prometheus's targets");
    let target = &targets["data"]["activeTargets"][0];
    (
        target["health"].as_str().unwrap_or_default().to_owned(),
        target["lastError"].as_str().unwrap_or_default().to_owned(),
    )
}

fn wait_for_target(prometheus: &Prometheus, health: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = target_health(prometheus);
        if answer.0 == health || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn with_kubernetes_auth_only_granted_service_accounts_read_the_report_and_metrics() {
    let _slot = privileged();
    let lab = Lab::new("auth").expect("a lab");
    let cluster = Cluster::start(
        &lab,
        ClusterConfig::new(Upstream::locate().expect("cargo xtask setup built the control plane")),
    )
    .expect("the control plane");
    let agent = cluster
        .install_agent_with_auth(&lab, &meshdrift_bin(), &["--update-interval=1s".to_owned()])
        .expect("the chart with auth.mode=kubernetes; the agent ready (/readyz needs no token)");
    // Only with auth: the agent may create token and access reviews.
    let can = |verb: &str, resource: &str| {
        cluster
            .kubectl
            .run(&[
                "auth",
                "can-i",
                verb,
                resource,
                "--as=system:serviceaccount:meshdrift:meshdrift",
            ])
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    assert_eq!(can("create", "tokenreviews.authentication.k8s.io"), "yes");
    assert_eq!(
        can("create", "subjectaccessreviews.authorization.k8s.io"),
        "yes"
    );
    let granted = cluster
        .service_account_token("monitoring", "prometheus", &AGENT_PATHS)
        .expect("a granted service account");
    let stranger = cluster
        .service_account_token("monitoring", "stranger", &[])
        .expect("a service account without the grant");

    for path in AGENT_PATHS {
        let url = format!("{}{path}", agent.url);
        let (status, body) = get(&url, None);
        assert_eq!(status, 401, "{path} without a token: {body}");
        let (status, body) = get(&url, Some("not-a-token"));
        assert_eq!(
            status, 401,
            "{path} with a token the API server rejects: {body}"
        );
        let (status, body) = get(&url, Some(&stranger));
        assert_eq!(status, 403, "{path} without the grant: {body}");
        assert!(
            body.contains("system:serviceaccount:monitoring:stranger"),
            "{body}"
        );
        let (status, body) = get(&url, Some(&granted));
        assert_eq!(status, 200, "{path} with the grant: {body}");
    }
    for path in ["/healthz", "/readyz"] {
        let (status, body) = get(&format!("{}{path}", agent.url), None);
        assert_eq!(status, 200, "{path} stays open for the kubelet: {body}");
    }

    let dir = lab.dir().join("auth");
    std::fs::create_dir_all(&dir).expect("a directory");
    let granted_file = write(&dir, "prometheus.token", &granted);
    let stranger_file = write(&dir, "stranger.token", &stranger);
    let report = |token: Option<&Path>| {
        let mut command = Command::new(meshdrift_bin());
        command.args(["report", "--output", "json", "--url", &agent.url]);
        if let Some(file) = token {
            command.arg("--token-file").arg(file);
        }
        command.output().expect("meshdrift report")
    };
    let output = report(Some(&granted_file));
    assert!(
        output.status.success(),
        "report with the granted token: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert!(body["node"].is_string(), "{body}");
    let output = report(None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("401") && stderr.contains("--token-file"),
        "{stderr}"
    );
    let output = report(Some(&stranger_file));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("403"),
        "{stderr}"
    );

    // A real Prometheus scrapes with its service account's token, and a
    // stranger's token gets it nothing.
    let target: std::net::SocketAddr = agent
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the agent's address");
    let prometheus =
        Prometheus::start_with_token(&dir.join("prometheus"), target, &[], Some(&granted_file))
            .expect("Prometheus");
    let (health, error) = wait_for_target(&prometheus, "up");
    assert_eq!(health, "up", "scraping with the granted token: {error}");
    assert!(
        prometheus
            .query("meshdrift_build_info")
            .expect("a query")
            .len()
            == 1
    );
    drop(prometheus);
    let refused =
        Prometheus::start_with_token(&dir.join("refused"), target, &[], Some(&stranger_file))
            .expect("Prometheus");
    let (health, error) = wait_for_target(&refused, "down");
    assert_eq!(health, "down", "{error}");
    assert!(error.contains("403"), "{error}");
}

#[test]
fn the_agent_serves_https_from_a_certificate_file() {
    let _slot = privileged();
    let lab = Lab::new("tls").expect("a lab");
    let dir = lab.dir().join("tls");
    std::fs::create_dir_all(&dir).expect("a directory");
    let authority = CertAuthority::create(&dir, "meshdrift-test-ca").expect("a CA");
    let identity = authority
        .issue_server(
            "agent",
            &["localhost".to_owned()],
            &["127.0.0.1".parse().expect("an IP")],
        )
        .expect("a server certificate");
    let (cert, key, ca) = (identity.cert, identity.key, authority.cert);
    let listen = meshdrift_lab::prometheus::free_loopback_port().expect("a port");
    let agent = meshdrift_lab::AgentProcess::run_on_manifests(
        &meshdrift_bin(),
        &workspace().join("deploy/examples/frontend"),
        listen,
        &[
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-key-file={}", key.display()),
        ],
    )
    .expect("the agent serving HTTPS");
    let https = format!("https://{listen}");
    let output = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .arg(format!("{https}/readyz"))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "ready\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new(meshdrift_bin())
        .args(["report", "--output", "json", "--url", &https, "--ca-file"])
        .arg(&ca)
        .output()
        .expect("meshdrift report");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Without the certificate it is not trusted; plain HTTP is not served.
    let output = Command::new(meshdrift_bin())
        .args(["report", "--url", &https])
        .output()
        .expect("meshdrift report");
    assert!(!output.status.success());
    let plain = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{listen}/readyz"))
        .output()
        .expect("curl");
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    agent
        .stop(Duration::from_secs(10))
        .expect("the agent stops");
}
