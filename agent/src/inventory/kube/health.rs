//! What stands between the kube source and a complete inventory, per kind:
//! a list or watch the API server forbids (missing RBAC), a server that
//! cannot be reached, or another failure. Each problem is logged once, in
//! one line naming the resource, when it appears (and once when it clears);
//! readiness reports the ones still open.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::{error, info};

use crate::model::Kind;

/// Shared between the watchers (which report) and the agent (which tells
/// `/readyz`). Cloning is cheap.
#[derive(Debug, Clone, Default)]
pub struct SourceHealth {
    problems: Arc<Mutex<BTreeMap<Kind, String>>>,
}

impl SourceHealth {
    /// Records what stops `kind` from listing or watching; logs it the first
    /// time it is seen.
    pub fn report(&self, kind: Kind, err: &kube::Error) {
        let problem = describe(kind, err);
        let mut problems = self.lock();
        if problems.get(&kind) != Some(&problem) {
            error!(kind = kind.name(), resource = kind.resource(), "{problem}");
            problems.insert(kind, problem);
        }
    }

    /// `kind` lists and watches again.
    pub fn clear(&self, kind: Kind) {
        if self.lock().remove(&kind).is_some() {
            info!(
                kind = kind.name(),
                resource = kind.resource(),
                "listing and watching work again"
            );
        }
    }

    /// The open problems, one sentence each, in kind order.
    pub fn problems(&self) -> Vec<String> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Kind, String>> {
        self.problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One sentence that names the resource and says what to do.
fn describe(kind: Kind, err: &kube::Error) -> String {
    let resource = kind.resource();
    match err {
        kube::Error::Api(status) if status.code == 403 => format!(
            "cannot list or watch {resource}: the API server forbids it ({}); the agent's \
             ClusterRole needs list and watch on {resource}",
            status.message
        ),
        kube::Error::Api(status) if status.code == 401 => format!(
            "cannot list or watch {resource}: the API server does not accept the agent's \
             credentials ({})",
            status.message
        ),
        kube::Error::Api(status) => format!(
            "cannot list or watch {resource}: the API server answered {} ({})",
            status.code, status.message
        ),
        kube::Error::HyperError(_) | kube::Error::Service(_) => format!(
            "cannot list or watch {resource}: the API server cannot be reached ({err}); \
             retrying with backoff"
        ),
        other => format!("cannot list or watch {resource}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(
                "endpointslices.discovery.k8s.io is forbidden: User \"system:serviceaccount:meshdrift:meshdrift\" cannot list resource",
                "Forbidden",
            )
            .with_code(403)
            .boxed(),
        )
    }

    #[test]
    fn a_forbidden_kind_is_named_until_it_clears() {
        let health = SourceHealth::default();
        health.report(Kind::EndpointSlice, &forbidden());
        health.report(Kind::EndpointSlice, &forbidden());
        let problems = health.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("cannot list or watch endpointslices.discovery.k8s.io")
                && problems[0].contains("forbids"),
            "{problems:?}"
        );
        health.clear(Kind::EndpointSlice);
        assert!(health.problems().is_empty());
    }
}
