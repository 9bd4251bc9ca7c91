//! One task per kind: a `kube::runtime` watcher feeding a reflector store.
//!
//! The watcher relists by itself when a watch ends or the server answers
//! 410 Gone, and the store swaps in a relist only once it is complete, so a
//! snapshot never sees a half-listed kind.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use super::istio::{IstioKind, Typed};
use super::progress::Reporter;

/// Watches a built-in kind for ever, pruning each object with `prune`.
pub(crate) async fn core<K>(api: Api<K>, mut writer: Writer<K>, prune: fn(&mut K), report: Reporter)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(prune);
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => apply(&mut writer, &event, &report),
            Err(err) => log_watch_error(&report, &err),
        }
    }
}

/// Applies one event to the store and tells the snapshot builder.
fn apply<K>(writer: &mut Writer<K>, event: &Event<K>, report: &Reporter)
where
    K: Resource + Clone,
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    writer.apply_watcher_event(event);
    match event {
        Event::InitDone => {
            debug!(kind = report.kind().name(), "listed");
            report.listed();
        }
        Event::Apply(_) | Event::Delete(_) => report.changed(),
        Event::Init | Event::InitApply(_) => {}
    }
}

fn log_watch_error(report: &Reporter, err: &watcher::Error) {
    match err {
        // Expected now and then: the watcher relists.
        watcher::Error::WatchError(status) if status.code == 410 => {
            debug!(kind = report.kind().name(), "watch expired; relisting");
        }
        _ => warn!(kind = report.kind().name(), error = %err, "watch failed; retrying"),
    }
}

/// How often an Istio kind that is not served is looked for again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IstioTiming {
    pub(crate) recheck: Duration,
    pub(crate) retry_max: Duration,
}

/// Watches an Istio kind for ever. When its CRD is not installed the kind
/// counts as listed and empty (a mesh without, say, PeerAuthentications is
/// ordinary), and the CRD is looked for again every `timing.recheck`.
pub(crate) async fn istio<T>(
    client: Client,
    spec: IstioKind,
    mut writer: Writer<Typed<T>>,
    report: Reporter,
    timing: IstioTiming,
) where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
{
    // Whether the kind's absence has been logged and published.
    let mut absent_logged = false;
    let mut retry = Duration::from_secs(1);
    loop {
        match served_version(&client, &spec).await {
            Ok(Some(version)) => {
                absent_logged = false;
                retry = Duration::from_secs(1);
                info!(kind = spec.kind, group = spec.group, version, "watching");
                let api = Api::<Typed<T>>::all_with(client.clone(), &spec.resource(version));
                watch_served(api, &mut writer, &report).await;
                info!(kind = spec.kind, version, "no longer served; looking again");
            }
            Ok(None) => {
                if !absent_logged {
                    warn!(
                        kind = spec.kind,
                        group = spec.group,
                        "not served by the API server (CRD not installed?); treating as empty"
                    );
                    absent_logged = true;
                    // Once per absence, so rechecks do not publish snapshots.
                    writer.apply_watcher_event(&Event::Init);
                    apply(&mut writer, &Event::InitDone, &report);
                }
                tokio::time::sleep(timing.recheck).await;
            }
            Err(err) => {
                warn!(kind = spec.kind, error = %err, retry_in = ?retry, "cannot look up served version");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(timing.retry_max);
            }
        }
    }
}

/// The first of the kind's versions the API server serves; `None` when none is.
async fn served_version(
    client: &Client,
    spec: &IstioKind,
) -> Result<Option<&'static str>, kube::Error> {
    for &version in spec.versions {
        let api = Api::<DynamicObject>::all_with(client.clone(), &spec.resource(version));
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Some(version)),
            Err(err) if is_not_found(&err) => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(None)
}

/// Runs the watcher until the kind stops being served.
async fn watch_served<T>(api: Api<Typed<T>>, writer: &mut Writer<Typed<T>>, report: &Reporter)
where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                warn_untyped(&event, report);
                apply(writer, &event, report);
            }
            Err(watcher::Error::InitialListFailed(err) | watcher::Error::WatchStartFailed(err))
                if is_not_found(&err) =>
            {
                return;
            }
            Err(err) => log_watch_error(report, &err),
        }
    }
}

fn warn_untyped<T>(event: &Event<Typed<T>>, report: &Reporter) {
    if let Event::Apply(object) | Event::InitApply(object) = event
        && let Some(problem) = &object.problem
    {
        warn!(
            kind = report.kind().name(),
            namespace = object.metadata.namespace.as_deref().unwrap_or(""),
            name = object.metadata.name.as_deref().unwrap_or(""),
            problem,
            "ignoring an object meshdrift cannot read"
        );
    }
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.is_not_found())
}
