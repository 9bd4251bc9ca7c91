//! Privileged tests of the lab itself. They need root, network namespaces and
//! cgroup v2, and fail with a message saying so when those are missing: a
//! skipped lab test would hide a broken lab from every test built on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meshdrift_lab::{
    Curl, CurlTls, Haproxy, Lab, Nginx, Pod, ProxyMode, Upstream, UpstreamTls, Wrk, cgroup2_root, cleanup_stale,
};

const HOST: &str = "frontend.default.svc.cluster.local";

fn require_privileges() {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the lab tests must run as root (uid is {uid}): they create network namespaces, a bridge and cgroups"
    );
    assert!(
        Path::new("/proc/self/ns/net").exists(),
        "the lab tests need network namespace support (/proc/self/ns/net is missing)"
    );
    if let Err(e) = cgroup2_root() {
        panic!("the lab tests need a mounted cgroup v2 hierarchy: {e}");
    }
}

fn lab(name: &str) -> Lab {
    require_privileges();
    Lab::new(name).unwrap_or_else(|e| panic!("creating lab {name}: {e}"))
}

fn pod(lab: &Lab, name: &str) -> Pod {
    lab.add_pod(name).unwrap_or_else(|e| panic!("adding pod {name}: {e}"))
}

fn mtls(lab: &Lab, with_client_cert: bool) -> CurlTls {
    let ca = lab.ca().expect("lab CA");
    let client = with_client_cert.then(|| {
        let id = lab.client_identity("client").expect("client identity");
        (id.cert, id.key)
    });
    CurlTls {
        ca: Some(ca.cert),
        client,
    }
}

#[test]
fn nginx_serves_plaintext_and_mtls_over_ipv4_and_ipv6() {
    let lab = lab("serve");
    let client = pod(&lab, "client");
    let server = pod(&lab, "server");
    let _nginx = Nginx::builder("server-v1")
        .http(8080)
        .tls(8443)
        .verify_client(true)
        .start(&server)
        .expect("nginx starts");

    for v6 in [false, true] {
        let plain = Curl::new(&server.url("http", v6, 8080)).count(3).run(&client).expect("curl runs");
        assert!(plain.all(200), "plaintext v6={v6}: {plain:?}");
        assert_eq!(plain.body_counts(), BTreeMap::from([("server-v1".to_owned(), 3)]));
        assert_eq!(plain.connections(), 1, "three requests over one kept-alive connection");
        assert_eq!(plain.responses[0].remote, server.ip(v6).to_string());

        let secure = Curl::new(&server.url("https", v6, 8443))
            .count(2)
            .tls(mtls(&lab, true))
            .run(&client)
            .expect("curl runs");
        assert!(secure.all(200), "mTLS v6={v6}: {secure:?}");

        // nginx finishes the handshake, then answers 400 "No required SSL
        // certificate was sent": no request ever reaches the location.
        let refused = Curl::new(&server.url("https", v6, 8443))
            .tls(mtls(&lab, false))
            .run(&client)
            .expect("curl runs");
        assert_eq!(refused.count_status(200), 0, "no client cert must not be served, v6={v6}: {refused:?}");
        assert_eq!(refused.count_status(400), 1, "v6={v6}: {refused:?}");
    }
}

#[test]
fn haproxy_http_mode_splits_requests_by_weight_over_reused_tls_connections() {
    let lab = lab("http-split");
    let client = pod(&lab, "client");
    let v1 = pod(&lab, "frontend-v1");
    let v2 = pod(&lab, "frontend-v2");
    let _n1 = Nginx::builder("v1").tls(8443).verify_client(true).start(&v1).expect("nginx v1");
    let _n2 = Nginx::builder("v2").tls(8443).verify_client(true).start(&v2).expect("nginx v2");
    let proxy = Haproxy::builder(15001, ProxyMode::Http)
        .server(
            Upstream::new("v1", SocketAddr::new(v1.ip(false), 8443), 80)
                .tls(UpstreamTls::istio_http(80, "v1", HOST, "client")),
        )
        .server(
            Upstream::new("v2", SocketAddr::new(v2.ip(true), 8443), 20)
                .tls(UpstreamTls::istio_http(80, "v2", HOST, "client").tls13_only(true)),
        )
        .start(&client)
        .expect("haproxy starts");

    let report = Curl::new(&proxy.url(false)).count(500).run(&client).expect("curl runs");
    assert!(report.all(200), "{:?}", report.status_counts());
    assert_eq!(report.connections(), 1, "the client keeps one connection to its proxy");

    let stats = proxy.stats().expect("stats");
    let (s1, s2) = (stats.server("v1").expect("v1 row"), stats.server("v2").expect("v2 row"));
    assert_eq!(s1.stot + s2.stot, 500, "{stats:?}");
    assert!((390..=410).contains(&s1.stot), "v1 got {} of 500 requests (want ~400): {stats:?}", s1.stot);
    assert_eq!(s1.hrsp_2xx, s1.stot);
    // The bodies say who served each request: they must agree with HAProxy.
    let bodies = report.body_counts();
    assert_eq!(bodies.get("v1").copied().unwrap_or(0) as u64, s1.stot);
    assert_eq!(bodies.get("v2").copied().unwrap_or(0) as u64, s2.stot);
    // Keep-alive towards the servers: a handful of connections, the rest reuse.
    for s in [s1, s2] {
        assert!(s.connect >= 1 && s.connect <= 3, "{}: {} upstream connections", s.name, s.connect);
        assert!(s.reuse + s.connect >= s.stot, "{s:?}");
    }
}

#[test]
fn haproxy_tcp_mode_balances_connections() {
    let lab = lab("tcp-split");
    let client = pod(&lab, "client");
    let a = pod(&lab, "backend-a");
    let b = pod(&lab, "backend-b");
    let _na = Nginx::builder("a").http(8080).start(&a).expect("nginx a");
    let _nb = Nginx::builder("b").http(8080).start(&b).expect("nginx b");
    let proxy = Haproxy::builder(9000, ProxyMode::Tcp)
        .server(Upstream::new("a", SocketAddr::new(a.ip(false), 8080), 3))
        .server(Upstream::new("b", SocketAddr::new(b.ip(false), 8080), 1))
        .start(&client)
        .expect("haproxy starts");

    let report = Curl::new(&proxy.url(true))
        .count(40)
        .new_connection_per_request(true)
        .run(&client)
        .expect("curl runs");
    assert!(report.all(200), "{:?}", report.status_counts());
    assert_eq!(report.connections(), 40, "Connection: close opens one connection per request");

    let stats = proxy.stats().expect("stats");
    let (sa, sb) = (stats.server("a").expect("a row"), stats.server("b").expect("b row"));
    assert_eq!((sa.stot, sb.stot), (30, 10), "{stats:?}");
    assert_eq!((sa.connect, sb.connect), (30, 10), "one upstream connection per client connection");
    let bodies = report.body_counts();
    assert_eq!((bodies.get("a"), bodies.get("b")), (Some(&30), Some(&10)));
}

#[test]
fn processes_run_in_the_pod_netns_and_cgroup() {
    let lab = lab("placement");
    let p = pod(&lab, "probe");
    assert!(p.cgroup_path().starts_with(lab.cgroup_path()));
    let ino = std::fs::metadata(p.cgroup_path()).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).expect("stat");
    assert_eq!(p.cgroup_id(), ino);

    let out = p.exec(&["cat", "/proc/self/cgroup"]).expect("cat runs");
    let root = cgroup2_root().expect("cgroup2");
    let rel = p.cgroup_path().strip_prefix(&root).expect("under root");
    assert!(
        out.stdout.lines().any(|l| l == format!("0::/{}", rel.display())),
        "want cgroup /{}: {}",
        rel.display(),
        out.stdout
    );

    let addrs = p.exec(&["ip", "-o", "addr", "show", "dev", "eth0"]).expect("ip runs").stdout;
    assert!(addrs.contains(&format!("{}/24", p.ipv4())), "{addrs}");
    assert!(addrs.contains(&format!("{}/64", p.ipv6())), "{addrs}");
    assert!(!addrs.contains("tentative"), "IPv6 must be usable at once: {addrs}");

    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
    let out = p.run(cmd, Duration::from_secs(5)).expect("runs");
    assert_eq!((out.stdout.as_str(), out.stderr.as_str(), out.status.code()), ("out\n", "err\n", Some(3)));
    let err = p.exec(&["false"]).expect_err("non-zero exit is an error");
    assert!(err.to_string().contains("false"), "{err}");
}

#[test]
fn long_held_connection_carries_spaced_requests() {
    let lab = lab("held");
    let client = pod(&lab, "client");
    let server = pod(&lab, "server");
    let _nginx = Nginx::builder("held").http(8080).start(&server).expect("nginx");
    let started = std::time::Instant::now();
    let report = Curl::new(&server.url("http", false, 8080))
        .count(3)
        .interval(Duration::from_secs(1))
        .run(&client)
        .expect("curl runs");
    assert!(report.all(200), "{report:?}");
    assert_eq!(report.connections(), 1, "one connection held across the pauses");
    assert!(started.elapsed() >= Duration::from_millis(1800), "requests were spaced: {:?}", started.elapsed());
}

#[test]
fn wrk_reports_rate_and_latency() {
    let lab = lab("wrk");
    let client = pod(&lab, "client");
    let server = pod(&lab, "server");
    let _nginx = Nginx::builder("bench").http(8080).start(&server).expect("nginx");
    let report = Wrk::new(&server.url("http", false, 8080))
        .connections(2)
        .duration(Duration::from_secs(1))
        .run(&client)
        .expect("wrk runs");
    assert!(report.requests > 100 && report.requests_per_sec > 100.0, "{report:?}");
    assert!(report.latency_p99 > Duration::ZERO && report.latency_p99 >= report.latency_p50, "{report:?}");
    assert_eq!((report.non_2xx_3xx, report.socket_errors), (0, 0), "{report:?}");
}

fn netns_names() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn teardown_leaves_nothing_behind() {
    let lab = lab("teardown");
    let id = lab.id();
    let bridge = lab.bridge().to_owned();
    let cgroup = lab.cgroup_path().to_owned();
    let dir = lab.dir().to_owned();
    let p = pod(&lab, "server");
    let (netns, veth) = (p.netns().to_owned(), p.host_veth().to_owned());
    let mut nginx = Nginx::builder("gone").http(8080).start(&p).expect("nginx");
    let pid = nginx.process().pid();
    // A process the lab handle does not track: teardown must still kill it.
    let orphan = p.spawn({
        let mut c = Command::new("sh");
        c.args(["-c", "sleep 300 & echo $!; wait"]);
        c
    });
    let orphan = orphan.expect("sh runs");
    std::thread::sleep(Duration::from_millis(100));
    let sleeper: u32 = orphan.stdout().trim().parse().expect("sleep pid");
    std::mem::forget(orphan);

    assert!(link_exists(&bridge) && link_exists(&veth) && cgroup.exists() && dir.exists());
    assert!(netns_names().contains(&netns));
    lab.teardown().expect("teardown succeeds");

    assert!(!link_exists(&bridge), "bridge {bridge} left behind (lab {id})");
    assert!(!link_exists(&veth), "veth {veth} left behind");
    assert!(!netns_names().contains(&netns), "netns {netns} left behind");
    assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
    assert!(!dir.exists(), "work dir {} left behind", dir.display());
    for pid in [pid, sleeper] {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Only a zombie (reaped by its parent later) may remain.
        assert!(state.is_empty() || state.contains(") Z"), "process {pid} still runs: {state}");
    }
    drop(nginx);
}

#[test]
fn labs_side_by_side_get_their_own_ids_and_subnets() {
    let labs: Vec<Lab> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|i| s.spawn(move || lab(&format!("side-{i}")))).collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let mut ids: Vec<u8> = labs.iter().map(Lab::id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct ids: {ids:?}");
    let subnets: Vec<String> = labs.iter().map(Lab::ipv4_subnet).collect();
    assert!(subnets.iter().all(|s| s.starts_with("10.213.")), "{subnets:?}");
}

#[test]
fn leftovers_of_a_dead_owner_are_swept() {
    require_privileges();
    // Fabricate the remains of a crashed lab with the highest id: a bridge
    // owned by a process that no longer exists, a namespace and a cgroup.
    let id = 250u8;
    let bridge = format!("mdl{id}br");
    let netns = format!("mdl{id}-ghost");
    let cgroup = cgroup2_root().expect("cgroup2").join(format!("meshdrift-lab-{id}"));
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("ip");
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    if link_exists(&bridge) {
        panic!("lab id {id} is in use; this test needs it free");
    }
    ip(&["link", "add", "name", &bridge, "type", "bridge"]);
    ip(&["link", "set", "dev", &bridge, "alias", "meshdrift-lab pid=4000000 start=1"]);
    ip(&["netns", "add", &netns]);
    std::fs::create_dir_all(cgroup.join("ghost")).expect("cgroup");

    let report = cleanup_stale().expect("sweep");
    assert!(report.removed.contains(&id), "{report:?}");
    assert!(!link_exists(&bridge));
    assert!(!netns_names().contains(&netns));
    assert!(!cgroup.exists());
}
