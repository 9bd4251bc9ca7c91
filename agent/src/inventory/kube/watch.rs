//! One task per kind: a `kube::runtime` watcher whose events become
//! [`Change`]s, each object in the slim form meshdrift keeps (a Pod becomes
//! a [`model::Pod`](crate::model::Pod) as it arrives). Nothing here keeps the
//! objects: the consumer does, in its index.
//!
//! The watcher relists by itself when a watch ends or the server answers
//! 410 Gone; a relist is delivered as `Listing`, the objects, `Listed`, and
//! the consumer forgets what the relist did not name.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::health::SourceHealth;
use super::istio::{IstioKind, Typed};
use crate::model::{Change, Kind, Object, ObjectKey, namespace_of};

/// What a watcher of one kind does with its objects.
pub(crate) struct Watched<K> {
    pub(crate) kind: Kind,
    /// The slim form, or `None` for an object meshdrift cannot use.
    pub(crate) convert: fn(K) -> Option<Object>,
    /// Where failures to list or watch are told.
    pub(crate) health: SourceHealth,
}

/// Where changes go; `false` once the consumer is gone.
async fn send(tx: &mpsc::Sender<Change>, change: Change) -> bool {
    tx.send(change).await.is_ok()
}

fn key_of<K: Resource>(object: &K, kind: Kind) -> ObjectKey {
    let meta = object.meta();
    let name = meta.name.clone().unwrap_or_default();
    match kind {
        Kind::Namespace => ObjectKey::new("", name),
        _ => ObjectKey::new(namespace_of(meta), name),
    }
}

/// Turns one watcher event into changes; `false` once the consumer is gone.
async fn forward<K: Resource>(
    event: Event<K>,
    watched: &Watched<K>,
    tx: &mpsc::Sender<Change>,
) -> bool {
    let kind = watched.kind;
    match event {
        Event::Init => send(tx, Change::Listing(kind)).await,
        Event::InitDone => {
            debug!(kind = kind.name(), "listed");
            watched.health.clear(kind);
            send(tx, Change::Listed(kind)).await
        }
        Event::InitApply(object) | Event::Apply(object) => match (watched.convert)(object) {
            Some(object) => send(tx, Change::Applied(object)).await,
            None => true,
        },
        Event::Delete(object) => send(tx, Change::Deleted(kind, key_of(&object, kind))).await,
    }
}

/// Watches a built-in kind until the consumer is gone, pruning each object
/// with `prune` before it is converted.
pub(crate) async fn core<K>(
    api: Api<K>,
    watched: Watched<K>,
    prune: fn(&mut K),
    tx: mpsc::Sender<Change>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(prune);
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if !forward(event, &watched, &tx).await {
                    return;
                }
            }
            Err(err) => note_watch_error(&watched, err),
        }
    }
}

/// A failed list or watch: 410 Gone is ordinary (the watcher relists);
/// anything else is a problem of the kind until it lists again, logged once.
fn note_watch_error<K>(watched: &Watched<K>, err: watcher::Error) {
    let kind = watched.kind;
    let err = match err {
        watcher::Error::WatchError(status) if status.code == 410 => {
            info!(kind = kind.name(), "watch expired (410 Gone); relisting");
            return;
        }
        watcher::Error::WatchError(status) => kube::Error::Api(status),
        watcher::Error::InitialListFailed(err)
        | watcher::Error::WatchStartFailed(err)
        | watcher::Error::WatchFailed(err) => err,
        other => {
            warn!(kind = kind.name(), error = %other, "watch failed; retrying");
            return;
        }
    };
    watched.health.report(kind, &err);
}

/// How often an Istio kind that is not served is looked for again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IstioTiming {
    pub(crate) recheck: Duration,
    pub(crate) retry_max: Duration,
}

/// Watches an Istio kind until the consumer is gone. When its CRD is not
/// installed the kind counts as listed and empty (a mesh without, say,
/// PeerAuthentications is ordinary), and the CRD is looked for again every
/// `timing.recheck`.
pub(crate) async fn istio<T>(
    client: Client,
    spec: IstioKind,
    watched: Watched<Typed<T>>,
    tx: mpsc::Sender<Change>,
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
                if !watch_served(api, &watched, &tx).await {
                    return;
                }
                info!(kind = spec.kind, version, "no longer served; looking again");
            }
            Ok(None) => {
                watched.health.clear(watched.kind);
                if !absent_logged {
                    warn!(
                        kind = spec.kind,
                        group = spec.group,
                        "not served by the API server (CRD not installed?); treating as empty"
                    );
                    absent_logged = true;
                    // Once per absence: an empty list, so rechecks change nothing.
                    let kind = watched.kind;
                    if !send(&tx, Change::Listing(kind)).await
                        || !send(&tx, Change::Listed(kind)).await
                    {
                        return;
                    }
                }
                tokio::time::sleep(timing.recheck).await;
            }
            Err(err) => {
                watched.health.report(watched.kind, &err);
                debug!(kind = spec.kind, retry_in = ?retry, "looking up the served version again");
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

/// Runs the watcher until the kind stops being served (`true`) or the
/// consumer is gone (`false`).
async fn watch_served<T>(
    api: Api<Typed<T>>,
    watched: &Watched<Typed<T>>,
    tx: &mpsc::Sender<Change>,
) -> bool
where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                warn_untyped(&event, watched.kind);
                if !forward(event, watched, tx).await {
                    return false;
                }
            }
            Err(watcher::Error::InitialListFailed(err) | watcher::Error::WatchStartFailed(err))
                if is_not_found(&err) =>
            {
                return true;
            }
            Err(err) => note_watch_error(watched, err),
        }
    }
    true
}

fn warn_untyped<T>(event: &Event<Typed<T>>, kind: Kind) {
    if let Event::Apply(object) | Event::InitApply(object) = event
        && let Some(problem) = &object.problem
    {
        warn!(
            kind = kind.name(),
            namespace = object.metadata.namespace.as_deref().unwrap_or(""),
            name = object.metadata.name.as_deref().unwrap_or(""),
            problem,
            "ignoring an object meshdrift cannot read"
        );
    }
}

/// A kind (or a version of it) the API server does not serve. A real API
/// server answers an unknown group version with a bare `404 page not found`,
/// not a Status: the code says it.
fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.is_not_found() || status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unserved_version_is_not_found_whether_or_not_a_status_says_so() {
        // A real API server's answer for a group version it does not serve.
        let bare = kube::Error::Api(
            kube::core::Status::failure("404 page not found", "")
                .with_code(404)
                .boxed(),
        );
        let status = kube::Error::Api(
            kube::core::Status::failure("not found", "NotFound")
                .with_code(404)
                .boxed(),
        );
        let forbidden = kube::Error::Api(
            kube::core::Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        assert!(is_not_found(&bare) && is_not_found(&status));
        assert!(!is_not_found(&forbidden));
    }
}
