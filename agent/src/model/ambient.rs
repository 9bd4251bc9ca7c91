//! Istio ambient mode: which pods ztunnel carries instead of a sidecar
//! (docs/istio-semantics.md, AMB-1).
//!
//! Istio's CNI node agent marks a pod it has captured with the annotation
//! `ambient.istio.io/redirection: enabled`; that mark is authoritative.
//! Before (or without) it, enrollment follows the labels: the pod's own
//! `istio.io/dataplane-mode` (`none` opts out, `ambient` opts in), else its
//! namespace's, where a namespace that asks for sidecar injection
//! (`istio-injection: enabled` or an `istio.io/rev`) is not ambient. A pod
//! with a sidecar is never captured by ztunnel.

use super::Labels;

pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
pub const REDIRECTION_ANNOTATION: &str = "ambient.istio.io/redirection";
const AMBIENT: &str = "ambient";
const NONE: &str = "none";
const REDIRECTION_ENABLED: &str = "enabled";
const INJECTION_LABEL: &str = "istio-injection";
const REVISION_LABEL: &str = "istio.io/rev";

/// Annotation prefix kept on pods (beside the sidecar's).
pub const ANNOTATION_PREFIX: &str = "ambient.istio.io/";

/// What a pod's own metadata says about ambient enrollment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum AmbientMark {
    /// Nothing on the pod: its namespace decides.
    #[default]
    Unset,
    /// `istio.io/dataplane-mode: ambient` on the pod.
    Enrolled,
    /// `istio.io/dataplane-mode: none` on the pod.
    OptedOut,
    /// Istio's CNI redirected the pod's traffic to ztunnel.
    Redirected,
}

impl AmbientMark {
    pub fn of_pod(labels: &Labels, annotations: &Labels) -> Self {
        match labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) {
            Some(NONE) => AmbientMark::OptedOut,
            _ if annotations.get(REDIRECTION_ANNOTATION).map(String::as_str)
                == Some(REDIRECTION_ENABLED) =>
            {
                AmbientMark::Redirected
            }
            Some(AMBIENT) => AmbientMark::Enrolled,
            _ => AmbientMark::Unset,
        }
    }

    /// Whether a pod so marked is in ambient mode, given its namespace's
    /// enrollment and whether it has a sidecar.
    pub fn in_ambient(self, namespace_ambient: bool, has_sidecar: bool) -> bool {
        if has_sidecar {
            return false;
        }
        match self {
            AmbientMark::Redirected | AmbientMark::Enrolled => true,
            AmbientMark::OptedOut => false,
            AmbientMark::Unset => namespace_ambient,
        }
    }
}

/// Whether a namespace with these labels enrolls its pods in ambient mode.
pub fn namespace_is_ambient(labels: &Labels) -> bool {
    if labels.get(INJECTION_LABEL).map(String::as_str) == Some("enabled")
        || labels
            .get(REVISION_LABEL)
            .is_some_and(|rev| !rev.is_empty())
    {
        return false;
    }
    labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) == Some(AMBIENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn enrollment_follows_the_pod_then_its_namespace() {
        let none = Labels::new();
        let ambient = labels(&[(DATAPLANE_MODE_LABEL, AMBIENT)]);
        let opt_out = labels(&[(DATAPLANE_MODE_LABEL, NONE)]);
        let redirected = labels(&[(REDIRECTION_ANNOTATION, REDIRECTION_ENABLED)]);
        // (why, pod labels, pod annotations, namespace ambient, sidecar, in ambient)
        let table = [
            ("nothing anywhere", &none, &none, false, false, false),
            ("the namespace enrolls", &none, &none, true, false, true),
            (
                "the pod enrolls itself",
                &ambient,
                &none,
                false,
                false,
                true,
            ),
            ("the pod opts out", &opt_out, &none, true, false, false),
            (
                "the opt-out wins over a stale mark",
                &opt_out,
                &redirected,
                true,
                false,
                false,
            ),
            (
                "Istio's CNI captured it",
                &none,
                &redirected,
                false,
                false,
                true,
            ),
            (
                "a sidecar pod is never captured",
                &ambient,
                &redirected,
                true,
                true,
                false,
            ),
        ];
        for (why, pod_labels, annotations, namespace, sidecar, expected) in table {
            let mark = AmbientMark::of_pod(pod_labels, annotations);
            assert_eq!(mark.in_ambient(namespace, sidecar), expected, "{why}");
        }
    }

    #[test]
    fn a_namespace_asking_for_sidecars_is_not_ambient() {
        let ambient = (DATAPLANE_MODE_LABEL, AMBIENT);
        assert!(namespace_is_ambient(&labels(&[ambient])));
        assert!(!namespace_is_ambient(&labels(&[
            ambient,
            (INJECTION_LABEL, "enabled")
        ])));
        assert!(!namespace_is_ambient(&labels(&[
            ambient,
            (REVISION_LABEL, "1-31")
        ])));
        assert!(!namespace_is_ambient(&labels(&[(
            DATAPLANE_MODE_LABEL,
            "sidecar"
        )])));
    }
}
