//! Fixtures shared by the http, metrics and page tests: the demo's situation, a
//! declared 50/50 split served 80/20 and a client sending plaintext to v2.
#![allow(dead_code)] // each test crate uses a different part

use std::collections::BTreeMap;
use std::process::Command;

use meshdrift::observation::{
    Destination, ExpectedTransport, Observation, SplitKey, Unit, Workload,
};
use meshdrift::report::{
    AgentHealth, Finding, Report, SplitVerdict, SubsetShare, TransportVerdict,
    UnexpectedDestination,
};
use meshdrift::wire::Transport;

pub const HOST: &str = "frontend.default.svc.cluster.local";

pub fn workload(name: &str) -> Workload {
    Workload {
        namespace: "default".into(),
        name: name.into(),
    }
}

pub fn drift_report() -> Report {
    Report {
        generated_at: "2026-11-24T06:30:00Z".into(),
        node: "lab-node-1".into(),
        window_seconds: 600,
        splits: vec![
            SplitVerdict {
                source: workload("loadgen"),
                host: HOST.into(),
                port: 80,
                unit: Unit::Request,
                samples: 4000,
                p_value: Some(2.5e-300),
                drift: true,
                reason: "subset v2 received 20.0% of requests, declared 50.0% (beyond the 5.0% tolerance, p < 0.001)".into(),
                subsets: vec![
                    SubsetShare {
                        subset: Some("v1".into()),
                        declared: 0.5,
                        observed: 0.8,
                        count: 3200,
                        ci_low: 0.7874,
                        ci_high: 0.8120,
                    },
                    SubsetShare {
                        subset: Some("v2".into()),
                        declared: 0.5,
                        observed: 0.2,
                        count: 800,
                        ci_low: 0.1880,
                        ci_high: 0.2126,
                    },
                ],
            },
            SplitVerdict {
                source: workload("checkout"),
                host: "payments.shop.svc.cluster.local".into(),
                port: 8443,
                unit: Unit::Connection,
                samples: 1200,
                p_value: Some(0.41),
                drift: false,
                reason: "within tolerance".into(),
                subsets: vec![
                    SubsetShare {
                        subset: Some("stable".into()),
                        declared: 0.9,
                        observed: 0.905,
                        count: 1086,
                        ci_low: 0.887,
                        ci_high: 0.920,
                    },
                    SubsetShare {
                        subset: Some("canary".into()),
                        declared: 0.1,
                        observed: 0.095,
                        count: 114,
                        ci_low: 0.080,
                        ci_high: 0.113,
                    },
                ],
            },
        ],
        transport: vec![
            TransportVerdict {
                source: workload("curl"),
                host: HOST.into(),
                subset: Some("v2".into()),
                expected: Some(ExpectedTransport::Mtls),
                observed: BTreeMap::from([("http".to_owned(), 57)]),
                violation: true,
                mismatch: false,
                violations: 57,
                mismatches: 0,
            },
            TransportVerdict {
                source: workload("loadgen"),
                host: HOST.into(),
                subset: Some("v1".into()),
                expected: Some(ExpectedTransport::Mtls),
                observed: BTreeMap::from([("istio_mtls".to_owned(), 310)]),
                violation: false,
                mismatch: false,
                violations: 0,
                mismatches: 0,
            },
        ],
        unexpected: vec![UnexpectedDestination {
            source: workload("loadgen"),
            host: HOST.into(),
            port: 80,
            destination: "default/frontend-v3-7d9f".into(),
            reason: "pod matches no subset of the DestinationRule".into(),
            connections: 4,
            requests: 40,
        }],
        findings: vec![Finding {
            code: "IST0101".into(),
            severity: "warning".into(),
            resource: "VirtualService default/frontend".into(),
            message: "route references subset v3 that no DestinationRule defines".into(),
        }],
        agent: AgentHealth {
            version: "0.1.0".into(),
            uptime_seconds: 3_725,
            lost_events: BTreeMap::from([("ringbuf_full".to_owned(), 0)]),
            flows_tracked: 42,
            inventory: BTreeMap::from([("Pod".to_owned(), 6), ("Service".to_owned(), 2)]),
            excluded_flows: BTreeMap::from([("mesh_internal_port".to_owned(), 17)]),
        },
    }
}

pub fn observation(source: &str, subset: Option<&str>, transport: Transport) -> Observation {
    Observation {
        key: SplitKey {
            source: workload(source),
            host: HOST.into(),
            port: 80,
        },
        destination: Destination::Subset {
            subset: subset.map(str::to_owned),
        },
        transport,
        expected_transport: Some(ExpectedTransport::Mtls),
        requests: 10,
        connections: 1,
        bytes: 2048,
        at_seconds: 1.0,
    }
}

/// The Debian `prometheus` package's promtool; tests that need it fail (never skip)
/// without it.
pub fn promtool() -> Command {
    let path = "/usr/bin/promtool";
    let found = std::path::Path::new(path).exists()
        || Command::new("promtool").arg("--version").output().is_ok();
    assert!(
        found,
        "promtool not found: install the Debian `prometheus` package (apt-get install -y prometheus); \
         `cargo xtask setup` installs it"
    );
    Command::new(if std::path::Path::new(path).exists() {
        path
    } else {
        "promtool"
    })
}

/// The agent's HTTP server on 127.0.0.1 and a random port, on its own runtime
/// thread; shut down gracefully when dropped.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub state: meshdrift::http::AppState,
    pub publisher: meshdrift::http::ReportPublisher,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub fn start(report: Report) -> Server {
        let metrics = std::sync::Arc::new(meshdrift::export::Metrics::new());
        let (state, publisher) = meshdrift::http::AppState::new(report, metrics);
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                addr_tx
                    .send(listener.local_addr()?)
                    .expect("report address");
                meshdrift::http::serve(listener, served, async {
                    let _ = stop.await;
                })
                .await
            })
        });
        let addr = addr_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("server did not start");
        Server {
            addr,
            state,
            publisher,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and returns how `serve` ended.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.shutdown_and_join()
    }

    fn shutdown_and_join(&mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().expect("server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown_and_join();
    }
}

/// A GET that returns status, content type and body whatever the status.
pub fn get(url: &str, accept: Option<&str>) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let mut response = request.call().expect("GET");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.body_mut().read_to_string().expect("body");
    (status, content_type, body)
}
