//! The agent on a real control plane (etcd, kube-apiserver, the controllers,
//! the scheduler, kube-proxy, built from their upstream modules), installed
//! from `deploy/kubernetes` and reading the API server with its service
//! account: RBAC sufficient and minimal, an API server that is down at
//! start or restarted under load, watches that expire (410 Gone after an
//! etcd compaction), an address reused by another workload's pod, and
//! Istio's CRDs with or without `v1`. Needs root.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshdrift_e2e::privileged;
use meshdrift_lab::{
    Curl, Lab, Nginx,
    cluster::{AgentPod, Cluster, ClusterConfig, IstioCrdVersions, Upstream},
    meshdrift_bin,
    scenario::{Frontend, FrontendConfig, HOST, Inventory},
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A lab with a cluster and the agent installed from `deploy/kubernetes`.
fn bare_cluster(name: &str) -> (Lab, Cluster, AgentPod) {
    let lab = Lab::new(name).expect("a lab");
    let cluster = Cluster::start(
        &lab,
        ClusterConfig::new(Upstream::locate().expect("cargo xtask setup built the control plane")),
    )
    .expect("the control plane");
    let agent = cluster
        .install_agent(&lab, &meshdrift_bin(), &["--update-interval=1s".to_owned()])
        .expect("the agent installed from deploy/kubernetes becomes ready");
    (lab, cluster, agent)
}

/// Polls `/readyz` until `want` holds for its status and body.
fn wait_readyz(agent: &AgentPod, want: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let answer = agent.readyz().unwrap_or((0, String::new()));
        if want(answer.0, &answer.1) || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `name.group` as RBAC and the agent name a resource (`pods` in core).
fn resource_names(rule: &Value) -> Vec<String> {
    let groups: Vec<&str> = rule["apiGroups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    rule["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .flat_map(|resource| {
            groups.iter().map(move |group| {
                if group.is_empty() {
                    resource.to_owned()
                } else {
                    format!("{resource}.{group}")
                }
            })
        })
        .collect()
}

#[test]
fn the_shipped_rbac_is_enough_and_every_rule_of_it_is_needed() {
    let _slot = privileged();
    let (_lab, cluster, mut agent) = bare_cluster("rbac");
    let kubectl = &cluster.kubectl;
    // Ready with exactly the shipped ClusterRole, and it grants nothing more
    // than reading: no single get, no secrets, no writes.
    let account = "--as=system:serviceaccount:meshdrift:meshdrift";
    let can = |verb: &str, resource: &str| {
        kubectl
            .run(&["auth", "can-i", verb, resource, "-A", account])
            .unwrap_or_else(|e| match e {
                meshdrift_lab::LabError::Command { stderr, .. } => stderr,
                other => other.to_string(),
            })
            .trim()
            .to_owned()
    };
    assert_eq!(can("list", "pods"), "yes");
    assert_eq!(can("watch", "destinationrules.networking.istio.io"), "yes");
    for (verb, resource) in [
        ("get", "pods"),
        ("list", "secrets"),
        ("create", "pods"),
        ("delete", "virtualservices.networking.istio.io"),
    ] {
        assert_eq!(can(verb, resource), "no", "{verb} {resource}");
    }
    let shipped = kubectl
        .json(&["get", "clusterrole", "meshdrift"])
        .expect("the shipped ClusterRole");
    let rules = shipped["rules"].as_array().cloned().unwrap_or_default();
    assert!(rules.len() >= 4, "{shipped}");
    let rbac = workspace().join("deploy/kubernetes/rbac.yaml");
    for (i, rule) in rules.iter().enumerate() {
        let names = resource_names(rule);
        agent.stop_container();
        kubectl
            .run(&[
                "patch",
                "clusterrole",
                "meshdrift",
                "--type=json",
                "-p",
                &json!([{"op": "remove", "path": format!("/rules/{i}")}]).to_string(),
            ])
            .expect("removing one rule");
        agent.start_container().expect("the agent's container");
        let (status, body) = wait_readyz(&agent, |status, body| {
            status == 503 && names.iter().all(|name| body.contains(name.as_str()))
        });
        assert_eq!(status, 503, "without rule {i} ({names:?}): {body}");
        for name in &names {
            assert!(
                body.contains(&format!("cannot list or watch {name}")),
                "/readyz does not name {name}: {body}"
            );
        }
        // Retried with backoff, never a panic, and said once.
        std::thread::sleep(Duration::from_secs(3));
        assert!(agent.is_running(), "the agent exited: {}", agent.stderr());
        let log = agent.stderr();
        assert!(!log.contains("panicked"), "{log}");
        for name in &names {
            let lines = log
                .lines()
                .filter(|line| line.contains(&format!("cannot list or watch {name}")))
                .count();
            assert_eq!(lines, 1, "log lines naming {name}:\n{log}");
        }
        // The rule back: ready again without a restart.
        kubectl
            .run(&["apply", "-f", &rbac.display().to_string()])
            .expect("restoring the ClusterRole");
        let (status, body) = wait_readyz(&agent, |status, _| status == 200);
        assert_eq!(status, 200, "rule {i} restored: {body}");
    }
}

#[test]
fn an_agent_started_while_the_api_server_is_down_becomes_ready_when_it_returns() {
    let _slot = privileged();
    let (_lab, cluster, mut agent) = bare_cluster("outage");
    agent.stop_container();
    cluster.stop_apiserver();
    agent.start_container().expect("the agent's container");
    let (status, body) = wait_readyz(&agent, |status, body| {
        status == 503 && body.contains("cannot be reached")
    });
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot be reached"), "{body}");
    std::thread::sleep(Duration::from_secs(5));
    assert!(agent.is_running(), "the agent gave up: {}", agent.stderr());
    cluster.restart_apiserver().expect("the API server back");
    agent
        .wait_ready(Duration::from_secs(90))
        .expect("ready once the API server is back");
    assert!(!agent.stderr().contains("panicked"));
}

fn frontend(config: impl FnOnce(FrontendConfig) -> FrontendConfig) -> Frontend {
    Frontend::start(config(FrontendConfig {
        inventory: Inventory::KUBERNETES,
        ..FrontendConfig::new(
            workspace().join("deploy/examples/frontend"),
            meshdrift_bin(),
            (50, 50),
        )
    }))
    .expect("starting the frontend scenario")
}

/// Requests per subset the report's split of `client` counted.
fn counted(report: &Value) -> Vec<(String, u64)> {
    report["splits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["source"]["name"] == "client" && s["host"] == HOST)
        .flat_map(|s| s["subsets"].as_array().cloned().unwrap_or_default())
        .map(|s| {
            (
                s["subset"].as_str().unwrap_or("-").to_owned(),
                s["count"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// What HAProxy sent each subset.
fn sent(frontend: &Frontend) -> Vec<(String, u64)> {
    let stats = frontend
        .proxy()
        .expect("the client's sidecar")
        .stats()
        .expect("HAProxy's stats");
    ["v1", "v2"]
        .iter()
        .map(|subset| {
            (
                (*subset).to_owned(),
                stats.server(subset).map_or(0, |s| s.stot),
            )
        })
        .collect()
}

/// The agent's Pod count against the cluster's.
fn pods_known(frontend: &Frontend) -> (u64, u64) {
    let report = frontend.report().expect("the agent's report");
    let known = report["agent"]["inventory"]["Pod"].as_u64().unwrap_or(0);
    let cluster = frontend.cluster.as_ref().expect("a cluster");
    let listed = cluster
        .kubectl
        .json(&["get", "pods", "-A"])
        .expect("the cluster's pods")["items"]
        .as_array()
        .map_or(0, |items| items.len() as u64);
    (known, listed)
}

#[test]
fn restarts_and_expired_watches_lose_no_count_and_no_pod() {
    let _slot = privileged();
    let frontend = frontend(|config| config);
    // The API server restarted in the middle of the load: counting is the
    // kernel's, and goes on.
    std::thread::scope(|scope| {
        let load = scope.spawn(|| frontend.send(1_000, |_, _| {}));
        std::thread::sleep(Duration::from_secs(2));
        frontend
            .cluster
            .as_ref()
            .expect("a cluster")
            .restart_apiserver()
            .expect("restarting kube-apiserver");
        load.join()
            .expect("the load thread")
            .expect("requests through the restart");
    });
    let want = sent(&frontend);
    assert_eq!(want.iter().map(|(_, n)| n).sum::<u64>(), 1_000);
    let (report, settled) = frontend
        .wait_report(TIMEOUT, |report| counted(report) == want)
        .expect("the agent's report");
    assert!(
        settled,
        "HAProxy sent {want:?}, the agent counted {:?}",
        counted(&report)
    );

    // A pod added after the restart is known (the inventory caught up).
    let deadline = Instant::now() + TIMEOUT;
    while pods_known(&frontend).0 != pods_known(&frontend).1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let (known, listed) = pods_known(&frontend);
    assert_eq!(known, listed, "after the API server's restart");

    // Changes the agent does not watch move etcd's revision on; compacted,
    // the agent's watches can no longer resume from where they were: 410
    // Gone at the restart, and a relist.
    let cluster = frontend.cluster.as_ref().expect("a cluster");
    for n in 0..30 {
        cluster
            .kubectl
            .run(&[
                "create",
                "configmap",
                &format!("churn-{n}"),
                "-n",
                "default",
                "--from-literal=n=1",
            ])
            .expect("a ConfigMap");
    }
    let revision = cluster.compact_etcd().expect("compacting etcd");
    assert!(revision > 0);
    cluster
        .restart_apiserver()
        .expect("restarting kube-apiserver");
    cluster
        .delete_pod("default", "legacy")
        .expect("deleting legacy");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (known, listed) = pods_known(&frontend);
        if known == listed || Instant::now() > deadline {
            assert_eq!(known, listed, "after the relist: no pod lost or duplicated");
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = frontend.agent_stderr();
    assert!(
        log.contains("410 Gone"),
        "no watch expired after the compaction:\n{log}"
    );
}

#[test]
fn a_connection_counts_for_the_pod_that_held_the_address_when_it_was_made() {
    let _slot = privileged();
    // Sweeps 5 s apart: the old pod's last requests reach the agent after
    // its address belongs to the new pod.
    let frontend = frontend(|config| FrontendConfig {
        agent_args: vec!["--update-interval=5s".to_owned()],
        ..config
    });
    let cluster = frontend.cluster.as_ref().expect("a cluster");
    // legacy (no sidecar) holds one connection and sends 20 requests on it.
    let old = Curl::new(&frontend.service_url())
        .count(20)
        .interval(Duration::from_millis(100))
        .run(&frontend.legacy)
        .expect("legacy's requests");
    assert_eq!(old.count_status(200), 20);
    // Gone at once, and its address given to a pod of another workload.
    let host = frontend.legacy.host();
    cluster
        .remove_pod(&frontend.lab, "default", "legacy")
        .expect("removing legacy");
    let successor = frontend
        .lab
        .add_pod_at("successor", host)
        .expect("a pod at legacy's address");
    cluster
        .run_pod(
            &json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "successor", "namespace": "default", "labels": {"app": "successor"}},
                "spec": {"containers": [{"name": "successor", "image": "curlimages/curl:8.5.0"}]},
            }),
            Some(&successor),
        )
        .expect("the successor's object");
    let new = Curl::new(&frontend.service_url())
        .count(30)
        .new_connection_per_request(true)
        .run(&successor)
        .expect("the successor's requests");
    assert_eq!(new.count_status(200), 30);
    let requests = |report: &Value, source: &str| -> u64 {
        report["bypass"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|row| row["source"]["name"] == source)
            .map(|row| row["requests"].as_u64().unwrap_or(0))
            .sum()
    };
    let (report, settled) = frontend
        .wait_report(TIMEOUT, |report| {
            requests(report, "legacy") == 20 && requests(report, "successor") == 30
        })
        .expect("the agent's report");
    assert!(
        settled,
        "legacy sent 20, successor 30 from the same address; the report: {:#}",
        report["bypass"]
    );
}

#[test]
fn istio_kinds_are_read_from_clusters_without_their_v1_api() {
    let _slot = privileged();
    let frontend = Frontend::start(FrontendConfig {
        inventory: Inventory::Kubernetes(IstioCrdVersions::WithoutV1),
        ..FrontendConfig::new(
            workspace().join("deploy/examples/frontend"),
            meshdrift_bin(),
            (80, 20),
        )
    })
    .expect("starting the frontend scenario");
    let cluster = frontend.cluster.as_ref().expect("a cluster");
    // The cluster serves no v1: the agent found v1beta1.
    let served = cluster
        .kubectl
        .run(&[
            "api-resources",
            "--api-group=networking.istio.io",
            "-o",
            "wide",
        ])
        .expect("the served resources");
    assert!(
        !served.contains("networking.istio.io/v1 "),
        "v1 is served: {served}"
    );
    frontend.send(600, |_, _| {}).expect("the load");
    let (report, settled) = frontend
        .wait_report(TIMEOUT, |report| {
            report["splits"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["source"]["name"] == "client" && s["drift"] == true)
        })
        .expect("the agent's report");
    assert!(
        settled,
        "the stale 80/20 sidecar is not flagged: {:#}",
        report["splits"]
    );
    // The VirtualService's 50/50, the DestinationRule's subsets and TLS and
    // the STRICT PeerAuthentication all came through v1beta1.
    let split = report["splits"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["source"]["name"] == "client")
        .cloned()
        .unwrap_or(Value::Null);
    for subset in split["subsets"].as_array().into_iter().flatten() {
        assert_eq!(subset["declared"], 0.5, "{split}");
    }
    assert!(
        report["transport"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["source"]["name"] == "client" && t["expected"] == "mtls"),
        "{:#}",
        report["transport"]
    );
}

/// `cargo xtask cluster up --nodes 2`: both nodes registered and kept Ready,
/// each with its own kube-proxy; a Service whose endpoint is on node-2 is
/// reached from a pod on either node through that node's rules, and the
/// EndpointSlice controller names the endpoint's node.
#[test]
fn a_two_node_cluster_serves_a_service_from_either_node_through_its_own_kube_proxy() {
    let _slot = privileged();
    let lab = Lab::new("two-nodes").expect("a lab");
    let cluster = Cluster::start(
        &lab,
        ClusterConfig::new(Upstream::locate().expect("cargo xtask setup built the control plane"))
            .nodes(2),
    )
    .expect("a control plane with two nodes");
    let nodes: Value = serde_json::from_str(
        &cluster
            .kubectl
            .run(&["get", "nodes", "-o", "json"])
            .expect("the nodes"),
    )
    .expect("JSON");
    let ready: Vec<(String, String)> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| {
            let ready = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            (
                node["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                ready,
            )
        })
        .collect();
    assert_eq!(
        ready,
        vec![
            ("node-1".to_owned(), "True".to_owned()),
            ("node-2".to_owned(), "True".to_owned())
        ]
    );

    let web = lab.add_pod_on("web", 30, 2).expect("a pod on node-2");
    let nginx = Nginx::builder("web")
        .http(8080)
        .access_log(true)
        .start(&web)
        .expect("nginx");
    cluster
        .run_pod(
            &json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                                         "ports": [{"containerPort": 8080}]}]},
            }),
            Some(&web),
        )
        .expect("web's object");
    cluster
        .apply_objects(&[json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        })])
        .expect("the Service");
    let cluster_ip: std::net::Ipv4Addr = cluster
        .kubectl
        .run(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .expect("the cluster IP")
        .trim()
        .parse()
        .expect("an IPv4 cluster IP");
    cluster
        .wait_for_service_rules(cluster_ip, 80, 1)
        .expect("kube-proxy's rules on both nodes");
    let slices: Value = serde_json::from_str(
        &cluster
            .kubectl
            .run(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "json",
            ])
            .expect("the EndpointSlices"),
    )
    .expect("JSON");
    let endpoints: Vec<(String, String)> = slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|slice| slice["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|endpoint| {
            (
                endpoint["addresses"][0].as_str().unwrap_or("").to_owned(),
                endpoint["nodeName"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        endpoints.contains(&(web.ipv4().to_string(), "node-2".to_owned())),
        "{slices:#}"
    );

    let url = format!("http://{cluster_ip}:80/");
    let mut sent = Vec::new();
    for (name, host, node) in [("client-1", 31, 1), ("client-2", 32, 2)] {
        let client = lab.add_pod_on(name, host, node).expect("a client pod");
        let report = Curl::new(&url)
            .count(10)
            .new_connection_per_request(true)
            .run(&client)
            .expect("the client's requests");
        assert_eq!(report.count_status(200), 10, "from {name} on node-{node}");
        sent.push(client.ipv4().to_string());
    }
    let log = nginx.access_log();
    for client in &sent {
        let served = log
            .iter()
            .filter(|line| line.starts_with(&format!("{client} ")))
            .count();
        assert_eq!(
            served, 10,
            "requests from {client} in nginx's log: {log:#?}"
        );
    }
}
