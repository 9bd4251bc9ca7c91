//! A stand-in Kubernetes API server on 127.0.0.1 that speaks the list/watch
//! protocol the `kube` client uses: paginated lists (`limit`, `continue`,
//! `metadata.resourceVersion`), and watches from a resource version that
//! stream newline-delimited `{"type": ..., "object": ...}` events (ADDED,
//! MODIFIED, DELETED, BOOKMARK, and ERROR 410 once history is gone).
//! Collections that were never registered answer 404, like a CRD that is not
//! installed. The kube source's tests and the agent's memory benchmark (a
//! real `meshdrift run` against 150 000 pods) share it.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

pub const PODS: &str = "/api/v1/pods";
pub const SERVICES: &str = "/api/v1/services";
pub const NAMESPACES: &str = "/api/v1/namespaces";
pub const ENDPOINT_SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
pub const VIRTUAL_SERVICES: &str = "/apis/networking.istio.io/v1/virtualservices";
pub const DESTINATION_RULES: &str = "/apis/networking.istio.io/v1/destinationrules";
pub const PEER_AUTHENTICATIONS: &str = "/apis/security.istio.io/v1/peerauthentications";
pub const CORE: [&str; 4] = [PODS, SERVICES, NAMESPACES, ENDPOINT_SLICES];
pub const ISTIO: [&str; 3] = [VIRTUAL_SERVICES, DESTINATION_RULES, PEER_AUTHENTICATIONS];

/// The collection path (`/api/v1/pods`) an object of this apiVersion and kind lives in.
pub fn collection_of(api_version: &str, kind: &str) -> Option<String> {
    let plural = match kind {
        "Pod" => "pods",
        "Service" => "services",
        "Namespace" => "namespaces",
        "EndpointSlice" => "endpointslices",
        "VirtualService" => "virtualservices",
        "DestinationRule" => "destinationrules",
        "PeerAuthentication" => "peerauthentications",
        _ => return None,
    };
    Some(if api_version.contains('/') {
        format!("/apis/{api_version}/{plural}")
    } else {
        format!("/api/{api_version}/{plural}")
    })
}

#[derive(Default)]
struct Collection {
    api_version: String,
    kind: String,
    objects: BTreeMap<(String, String), Value>,
    /// Every event so far, for watches that resume from a resource version.
    history: Vec<(u64, String)>,
    /// Watches resuming from before this version get 410 Gone.
    oldest: u64,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
}

#[derive(Default)]
struct Inner {
    version: u64,
    collections: HashMap<String, Collection>,
    /// The most items a list page holds, whatever `limit` asks.
    page_size: Option<usize>,
    /// Collections whose list requests wait until released.
    held: Vec<String>,
    requests: Vec<String>,
}

#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Mutex<Inner>>,
    released: watch::Sender<u64>,
    pub addr: SocketAddr,
}

impl ApiServer {
    /// Starts serving the given collections (paths such as [`PODS`]), empty.
    pub async fn start(collections: &[&str]) -> ApiServer {
        let mut inner = Inner::default();
        for path in collections {
            inner
                .collections
                .insert((*path).to_owned(), Collection::default());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = ApiServer {
            inner: Arc::new(Mutex::new(inner)),
            released: watch::channel(0).0,
            addr,
        };
        let app = Router::new().fallback(handle).with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        server
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Starts serving `path`, as when a CRD is installed.
    pub fn serve(&self, path: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.collections.entry(path.to_owned()).or_default();
    }

    /// Stops serving `path` and ends its watches, as when a CRD is removed.
    pub fn unserve(&self, path: &str) {
        self.inner.lock().unwrap().collections.remove(path);
    }

    pub fn set_page_size(&self, size: usize) {
        self.inner.lock().unwrap().page_size = Some(size);
    }

    /// List requests for `path` wait until [`release`](Self::release).
    pub fn hold(&self, path: &str) {
        self.inner.lock().unwrap().held.push(path.to_owned());
    }

    pub fn release(&self) {
        self.inner.lock().unwrap().held.clear();
        self.released.send_modify(|n| *n += 1);
    }

    /// Every request so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Creates or replaces an object, telling watchers ADDED or MODIFIED.
    pub fn apply(&self, object: Value) {
        let path = path_of(&object);
        let mut inner = self.inner.lock().unwrap();
        inner.version += 1;
        let version = inner.version;
        let collection = inner.collections.get_mut(&path).expect("collection served");
        let (key, object) = stamp(object, version);
        let kind = if collection.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        collection.api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        collection.kind = object["kind"].as_str().unwrap_or_default().to_owned();
        collection.objects.insert(key, object.clone());
        collection.emit(version, kind, object);
    }

    /// Adds objects as if they had existed before anyone watched: no events,
    /// no history, one resource version for all. For large inventories,
    /// whose history would otherwise hold a copy of every object.
    pub fn preload(&self, objects: impl IntoIterator<Item = Value>) {
        let mut inner = self.inner.lock().unwrap();
        inner.version += 1;
        let version = inner.version;
        for object in objects {
            let path = path_of(&object);
            let collection = inner.collections.get_mut(&path).expect("collection served");
            let (key, object) = stamp(object, version);
            collection.api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
            collection.kind = object["kind"].as_str().unwrap_or_default().to_owned();
            collection.objects.insert(key, object);
        }
        for collection in inner.collections.values_mut() {
            collection.oldest = collection.oldest.max(version);
        }
    }

    /// Writes a kubeconfig that points a client (such as `meshdrift run`) at this server.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: http://{}\n\
             users:\n- name: stand-in\n  user: {{}}\ncontexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: stand-in\n\
             current-context: stand-in\n",
            self.addr
        );
        std::fs::write(path, text)
    }

    /// Deletes an object, telling watchers DELETED.
    pub fn delete(&self, path: &str, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.version += 1;
        let version = inner.version;
        let collection = inner.collections.get_mut(path).expect("collection served");
        let object = collection
            .objects
            .remove(&(namespace.to_owned(), name.to_owned()))
            .expect("object exists");
        let (_, object) = stamp(object, version);
        collection.emit(version, "DELETED", object);
    }

    /// Ends every open watch on `path`, as an API server does on its own timeout.
    pub fn end_watches(&self, path: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.collections.get_mut(path).unwrap().watchers.clear();
    }

    /// Forgets the history of `path` after changing `changed` without telling
    /// anyone, then tells open watches 410 Gone: only a relist can see the change.
    pub fn expire_with_silent_change(&self, path: &str, changed: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.version += 1;
        let version = inner.version;
        let collection = inner.collections.get_mut(path).unwrap();
        let (key, object) = stamp(changed, version);
        collection.objects.insert(key, object);
        collection.history.clear();
        collection.oldest = version + 1;
        let gone = line("ERROR", gone_status());
        for watcher in collection.watchers.drain(..) {
            let _ = watcher.send(gone.clone());
        }
    }
}

impl Collection {
    fn emit(&mut self, version: u64, kind: &str, object: Value) {
        let text = line(kind, object);
        self.history
            .push((version, String::from_utf8_lossy(&text).into_owned()));
        self.watchers.retain(|w| w.send(text.clone()).is_ok());
    }
}

fn path_of(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    collection_of(api_version, kind).expect("a served kind")
}

/// Sets `metadata.resourceVersion` (and a namespace default) and returns the key.
fn stamp(mut object: Value, version: u64) -> ((String, String), Value) {
    let meta = object["metadata"].as_object_mut().expect("metadata");
    meta.insert("resourceVersion".into(), json!(version.to_string()));
    meta.entry("uid")
        .or_insert_with(|| json!(format!("uid-{version}")));
    let namespace = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = meta["name"].as_str().expect("name").to_owned();
    ((namespace, name), object)
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut text = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    text.push(b'\n');
    Bytes::from(text)
}

fn gone_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "too old resource version", "reason": "Expired", "code": 410})
}

fn not_found() -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": "the server could not find the requested resource",
                      "reason": "NotFound", "details": {}, "code": 404});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn handle(
    State(server): State<ApiServer>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = uri.path().to_owned();
    {
        let mut inner = server.inner.lock().unwrap();
        inner.requests.push(uri.to_string());
        if !inner.collections.contains_key(&path) {
            return not_found();
        }
    }
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        watch_response(&server, &path, &query)
    } else {
        let mut released = server.released.subscribe();
        while server.inner.lock().unwrap().held.contains(&path) {
            let _ = released.changed().await;
        }
        list_response(&server, &path, &query)
    }
}

fn list_response(server: &ApiServer, path: &str, query: &HashMap<String, String>) -> Response {
    let inner = server.inner.lock().unwrap();
    let collection = &inner.collections[path];
    let start: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let size = limit.min(inner.page_size.unwrap_or(usize::MAX));
    let items: Vec<Value> = collection
        .objects
        .values()
        .skip(start)
        .take(size)
        .map(|o| {
            // Items in a list carry no apiVersion and kind, as the real server sends them.
            let mut o = o.clone();
            if let Some(map) = o.as_object_mut() {
                map.remove("apiVersion");
                map.remove("kind");
            }
            o
        })
        .collect();
    let next = start + items.len();
    let mut metadata = json!({"resourceVersion": inner.version.to_string()});
    if next < collection.objects.len() {
        metadata["continue"] = json!(next.to_string());
    }
    let kind = path.rsplit('/').next().unwrap_or_default();
    let body = json!({"apiVersion": list_api_version(path), "kind": format!("{kind}List"),
                      "metadata": metadata, "items": items});
    axum::Json(body).into_response()
}

fn list_api_version(path: &str) -> String {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", version, _] => (*version).to_owned(),
        ["apis", group, version, _] => format!("{group}/{version}"),
        _ => String::new(),
    }
}

fn watch_response(server: &ApiServer, path: &str, query: &HashMap<String, String>) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    {
        let mut inner = server.inner.lock().unwrap();
        let version = inner.version;
        let collection = inner.collections.get_mut(path).unwrap();
        if from < collection.oldest {
            let _ = tx.send(line("ERROR", gone_status()));
            drop(tx);
        } else {
            for (_, text) in collection.history.iter().filter(|(v, _)| *v > from) {
                let _ = tx.send(Bytes::from(text.clone()));
            }
            if query
                .get("allowWatchBookmarks")
                .is_some_and(|b| b == "true")
            {
                let bookmark = json!({"apiVersion": list_api_version(path),
                    "kind": collection.kind.clone(),
                    "metadata": {"resourceVersion": version.to_string()}});
                let _ = tx.send(line("BOOKMARK", bookmark));
            }
            collection.watchers.push(tx);
        }
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// Every document of every manifest in `dir` that a served kind holds, as JSON.
pub fn manifests(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            let known = value["apiVersion"]
                .as_str()
                .zip(value["kind"].as_str())
                .and_then(|(v, k)| collection_of(v, k));
            if known.is_some() {
                out.push(value);
            }
        }
    }
    out
}
