//! `cargo xtask lab up|down`: a lab to poke at by hand, and the broom for
//! whatever labs left behind.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use meshdrift_lab::{Haproxy, Lab, Nginx, Pod, ProxyMode, Upstream, UpstreamTls};

const HOST: &str = "frontend.default.svc.cluster.local";
const SERVICE_PORT: u16 = 80;
const HTTP_PORT: u16 = 8080;
const MTLS_PORT: u16 = 8443;
const PROXY_PORT: u16 = 15001;

#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Build the frontend example (a `client` pod whose HAProxy splits
    /// requests between `frontend-v1` and `frontend-v2` over Istio-style
    /// mTLS), print how to reach it, and keep it until Ctrl-C.
    Up {
        /// Weight of subset v1 in the client's proxy.
        #[arg(long, default_value_t = 50)]
        v1_weight: u32,
        /// Weight of subset v2 in the client's proxy.
        #[arg(long, default_value_t = 50)]
        v2_weight: u32,
        /// Balance per connection (tcp) instead of per request (http).
        #[arg(long)]
        tcp: bool,
    },
    /// Remove what earlier labs left behind (namespaces, veths, bridges,
    /// cgroups, work directories) once their owner process is gone.
    Down {
        /// Also remove labs whose owner still runs.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: LabCommand) -> anyhow::Result<()> {
    match cmd {
        LabCommand::Up {
            v1_weight,
            v2_weight,
            tcp,
        } => up(v1_weight, v2_weight, tcp),
        LabCommand::Down { force } => down(force),
    }
}

fn up(v1_weight: u32, v2_weight: u32, tcp: bool) -> anyhow::Result<()> {
    // Until the lab is up, Ctrl-C tears down whatever exists and exits.
    meshdrift_lab::install_signal_cleanup().context("installing the Ctrl-C hook")?;
    let lab = Lab::new("xtask-lab-up").context("creating the lab (needs root)")?;
    let client = lab.add_pod("client")?;
    let v1 = lab.add_pod("frontend-v1")?;
    let v2 = lab.add_pod("frontend-v2")?;
    let nginx_v1 = start_frontend(&v1, "v1")?;
    let nginx_v2 = start_frontend(&v2, "v2")?;
    let mode = if tcp { ProxyMode::Tcp } else { ProxyMode::Http };
    let upstream = |pod: &Pod, subset: &str, weight: u32| {
        let tls = if tcp {
            UpstreamTls::istio_tcp(SERVICE_PORT, subset, HOST, "client")
        } else {
            UpstreamTls::istio_http(SERVICE_PORT, subset, HOST, "client")
        };
        Upstream::new(subset, SocketAddr::new(pod.ip(false), MTLS_PORT), weight).tls(tls)
    };
    let proxy = Haproxy::builder(PROXY_PORT, mode)
        .server(upstream(&v1, "v1", v1_weight))
        .server(upstream(&v2, "v2", v2_weight))
        .start(&client)
        .context("starting HAProxy in the client pod")?;
    let manifests = lab.dir().join("manifests");
    write_manifests(
        &manifests,
        &[(&client, None), (&v1, Some("v1")), (&v2, Some("v2"))],
        v1_weight,
        v2_weight,
    )?;

    print_summary(&lab, &[&client, &v1, &v2], &proxy, &manifests)?;
    let signal = wait_printing_stats(&proxy)?;
    println!("\nsignal {signal}: tearing the lab down");
    drop((proxy, nginx_v1, nginx_v2));
    lab.teardown().context("tearing the lab down")?;
    println!("lab removed");
    Ok(())
}

/// Waits for Ctrl-C; meanwhile prints HAProxy's per-server counters
/// whenever they change, so traffic sent by hand shows up here.
fn wait_printing_stats(proxy: &Haproxy) -> anyhow::Result<i32> {
    let mut last = String::new();
    loop {
        if let Some(signal) = meshdrift_lab::wait_for_signal_timeout(Duration::from_secs(2))? {
            return Ok(signal);
        }
        let Ok(stats) = proxy.stats() else { continue };
        let unit = if proxy.mode() == ProxyMode::Http {
            "requests"
        } else {
            "sessions"
        };
        let line = stats
            .servers
            .iter()
            .map(|s| {
                format!(
                    "{}: {} {unit} over {} connection(s)",
                    s.name, s.stot, s.connect
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        if line != last {
            println!("haproxy: {line}");
            last = line;
        }
    }
}

fn start_frontend(pod: &Pod, subset: &str) -> anyhow::Result<Nginx> {
    Nginx::builder(&format!("frontend-{subset}"))
        .http(HTTP_PORT)
        .tls(MTLS_PORT)
        .verify_client(true)
        .dns_name(HOST)
        .access_log(true)
        .start(pod)
        .with_context(|| format!("starting nginx in {}", pod.name()))
}

fn print_summary(
    lab: &Lab,
    pods: &[&Pod],
    proxy: &Haproxy,
    manifests: &Path,
) -> anyhow::Result<()> {
    let mut out = String::new();
    writeln!(
        out,
        "lab {} is up: bridge {}, {} and {}",
        lab.id(),
        lab.bridge(),
        lab.ipv4_subnet(),
        lab.ipv6_subnet()
    )?;
    writeln!(
        out,
        "work dir {} (set MESHDRIFT_LAB_KEEP=1 to keep it)\n",
        lab.dir().display()
    )?;
    writeln!(
        out,
        "{:<13} {:<20} {:<15} {:<20} {:>10}  runs",
        "pod", "netns", "ipv4", "ipv6", "cgroup id"
    )?;
    for pod in pods {
        let runs = if pod.name() == "client" {
            format!(
                "haproxy :{PROXY_PORT} -> v1/v2 :{MTLS_PORT} (mTLS, SNI outbound_.{SERVICE_PORT}_.<subset>_.{HOST})"
            )
        } else {
            format!("nginx :{HTTP_PORT} plaintext, :{MTLS_PORT} mTLS (client cert required)")
        };
        writeln!(
            out,
            "{:<13} {:<20} {:<15} {:<20} {:>10}  {runs}",
            pod.name(),
            pod.netns(),
            pod.ipv4().to_string(),
            pod.ipv6().to_string(),
            pod.cgroup_id()
        )?;
    }
    let ca = lab.ca()?;
    let client_id = lab.client_identity("client")?;
    let (c, v1) = (pods[0], pods[1]);
    writeln!(out, "\ntry:")?;
    writeln!(
        out,
        "  ip netns exec {} curl -s {}            # through the proxy",
        c.netns(),
        proxy.url(false)
    )?;
    writeln!(
        out,
        "  ip netns exec {} curl -sg {}     # plaintext, IPv6",
        c.netns(),
        v1.url("http", true, HTTP_PORT)
    )?;
    writeln!(
        out,
        "  ip netns exec {} curl -s --cacert {} --cert {} --key {} {}",
        c.netns(),
        ca.cert.display(),
        client_id.cert.display(),
        client_id.key.display(),
        v1.url("https", false, MTLS_PORT)
    )?;
    writeln!(
        out,
        "  ip netns exec {} bash                               # a shell in a pod",
        c.netns()
    )?;
    writeln!(out, "  meshdrift run --manifests {}", manifests.display())?;
    writeln!(
        out,
        "\nHAProxy's per-server counters (stats socket {}) print below as they change; Ctrl-C tears everything down.",
        proxy.socket_path().display()
    )?;
    print!("{out}");
    Ok(())
}

/// Kubernetes and Istio objects describing the lab, for the agent's files
/// source: the pods with their IPs and labels, the service, and the
/// DestinationRule and VirtualService matching the proxy's weights.
fn write_manifests(
    dir: &Path,
    pods: &[(&Pod, Option<&str>)],
    v1: u32,
    v2: u32,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut yaml = String::new();
    for (pod, version) in pods {
        let labels = match version {
            Some(v) => format!("app: frontend\n    version: {v}"),
            None => "app: client".to_owned(),
        };
        writeln!(
            yaml,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: default\n  labels:\n    {labels}\nspec:\n  nodeName: lab\n  containers:\n  - name: app\n    image: lab\nstatus:\n  podIP: {}\n  podIPs:\n  - ip: {}\n  - ip: {}\n---",
            pod.name(),
            pod.ipv4(),
            pod.ipv4(),
            pod.ipv6()
        )?;
    }
    writeln!(
        yaml,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: frontend\n  namespace: default\nspec:\n  selector:\n    app: frontend\n  ports:\n  - name: http\n    port: {SERVICE_PORT}\n    targetPort: {MTLS_PORT}\n---"
    )?;
    writeln!(
        yaml,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: frontend\n  namespace: default\nspec:\n  host: frontend\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v2\n---"
    )?;
    writeln!(
        yaml,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: frontend\n  namespace: default\nspec:\n  hosts:\n  - frontend\n  http:\n  - route:\n    - destination:\n        host: frontend\n        subset: v1\n      weight: {v1}\n    - destination:\n        host: frontend\n        subset: v2\n      weight: {v2}"
    )?;
    let path = dir.join("frontend.yaml");
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn down(force: bool) -> anyhow::Result<()> {
    let report = if force {
        meshdrift_lab::cleanup_all()
    } else {
        meshdrift_lab::cleanup_stale()
    }
    .context("removing lab leftovers (needs root)")?;
    if report.removed.is_empty() && report.dirs.is_empty() {
        println!("no lab leftovers found");
    }
    for id in &report.removed {
        println!("removed lab {id} (netns, veths, bridge, cgroup)");
    }
    for dir in &report.dirs {
        println!("removed {}", dir.display());
    }
    for (id, pid) in &report.live {
        println!("left lab {id} alone: its owner (pid {pid}) still runs; stop it or use --force");
    }
    Ok(())
}
