//! A synthetic mesh as Kubernetes and Istio manifests, of any size: the
//! benchmark's 150 000 pods, or a smaller one for a test.
//!
//! `namespaces` × `services_per_namespace` Services, each with a 90/10
//! VirtualService over subsets v1/v2 and a DestinationRule defining them
//! (`ISTIO_MUTUAL` on every other one), one namespace-wide
//! PeerAuthentication per namespace (STRICT on even namespaces), and `pods`
//! pods dealt round-robin to the Services (one in four is v2), each with a
//! sidecar label. Endpoints come from the selectors, as in a manifest
//! directory. The manifests are YAML text, so the same mesh feeds the
//! policy engine, the files source and `meshdrift check`.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use meshdrift::inventory::files::{self, LoadOutcome};
use meshdrift::model::Objects;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticMesh {
    pub namespaces: usize,
    pub services_per_namespace: usize,
    pub pods: usize,
}

impl SyntheticMesh {
    /// The benchmark mesh: 150 000 pods, 20 000 services in 200 namespaces.
    pub const BENCHMARK: SyntheticMesh = SyntheticMesh {
        namespaces: 200,
        services_per_namespace: 100,
        pods: 150_000,
    };

    pub fn services(&self) -> usize {
        self.namespaces * self.services_per_namespace
    }

    /// The manifests of one namespace: its Namespace, PeerAuthentication,
    /// Services with their VirtualServices and DestinationRules, and pods.
    pub fn namespace_yaml(&self, n: usize) -> String {
        let ns = format!("ns-{n}");
        let mut out = String::new();
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n\
             apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: {ns}\nspec:\n  mtls:\n    mode: {}\n",
            if n.is_multiple_of(2) {
                "STRICT"
            } else {
                "PERMISSIVE"
            }
        );
        let services = self.services();
        for s in n * self.services_per_namespace..(n + 1) * self.services_per_namespace {
            let app = format!("svc-{s}");
            let tls = if s.is_multiple_of(2) {
                "  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n"
            } else {
                ""
            };
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {app}\n  namespace: {ns}\nspec:\n  selector:\n    app: {app}\n  ports:\n    - name: http\n      port: 80\n      targetPort: 8080\n\
                 ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {app}\n  namespace: {ns}\nspec:\n  host: {app}\n{tls}  subsets:\n    - name: v1\n      labels:\n        version: v1\n    - name: v2\n      labels:\n        version: v2\n\
                 ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {app}\n  namespace: {ns}\nspec:\n  hosts:\n    - {app}\n  http:\n    - route:\n        - destination:\n            host: {app}\n            subset: v1\n          weight: 90\n        - destination:\n            host: {app}\n            subset: v2\n          weight: 10\n"
            );
            for p in (s..self.pods).step_by(services.max(1)) {
                let version = if (p / services).is_multiple_of(4) {
                    "v2"
                } else {
                    "v1"
                };
                let ip = Self::pod_ip(p);
                let _ = write!(
                    out,
                    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {app}-{version}-{p}\n  namespace: {ns}\n  labels:\n    app: {app}\n    version: {version}\n    security.istio.io/tlsMode: istio\n    pod-template-hash: \"{:x}\"\nspec:\n  containers:\n    - name: app\n      ports:\n        - name: http\n          containerPort: 8080\nstatus:\n  phase: Running\n  podIP: {ip}\n",
                    p % 97
                );
            }
        }
        out
    }

    /// Writes one file per namespace into `dir` and returns the bytes written.
    pub fn write_manifests(&self, dir: &Path) -> io::Result<u64> {
        std::fs::create_dir_all(dir)?;
        let mut bytes = 0;
        for n in 0..self.namespaces {
            let text = self.namespace_yaml(n);
            bytes += text.len() as u64;
            std::fs::write(dir.join(format!("ns-{n:03}.yaml")), text)?;
        }
        Ok(bytes)
    }

    /// Every object of namespace `n` as the JSON an API server holds, for the
    /// stand-in API server ([`crate::apiserver`]).
    pub fn namespace_json(&self, n: usize) -> Vec<serde_json::Value> {
        serde_yaml_ng::Deserializer::from_str(&self.namespace_yaml(n))
            .map(|document| {
                serde::Deserialize::deserialize(document).expect("synthetic YAML is valid")
            })
            .collect()
    }

    /// The IP the synthetic pod number `p` has.
    pub fn pod_ip(p: usize) -> String {
        format!("10.{}.{}.{}", 64 + p / 65_536, (p / 256) % 256, p % 256)
    }

    /// Every object, loaded from the manifests as the files source loads them.
    pub fn objects(&self) -> Objects {
        let mut outcome = LoadOutcome::default();
        for n in 0..self.namespaces {
            let name = format!("ns-{n:03}.yaml");
            files::load_str(Path::new(&name), &self.namespace_yaml(n), &mut outcome);
        }
        assert!(
            outcome.problems.is_empty(),
            "synthetic manifests load cleanly: {:?}",
            outcome.problems
        );
        outcome.objects
    }
}
