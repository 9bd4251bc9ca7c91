//! The agent's HTTP server on a free port, and a plain GET to read it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use meshdrift::export::Metrics;
use meshdrift::http::{self, AppState, ReportPublisher};
use meshdrift::report::Report;

/// The agent's HTTP server on 127.0.0.1 and a random port, on its own runtime
/// thread; shut down gracefully when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    pub publisher: ReportPublisher,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub fn start(report: Report) -> Server {
        let metrics = Arc::new(Metrics::new());
        let (state, publisher) = AppState::new(report, metrics);
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
                http::serve(listener, served, http::ServeOptions::default(), async {
                    let _ = stop.await;
                })
                .await
            })
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
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
        .timeout_global(Some(Duration::from_secs(10)))
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
