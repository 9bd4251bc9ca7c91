//! Istio's outbound SNI, `outbound_.<port>_.<subset>_.<fqdn>`.
//!
//! A client sidecar names the cluster it picked in the SNI of its mTLS ClientHello
//! (Istio's `BuildDNSSrvSubsetKey`), so the SNI tells us the service, port and subset
//! the client proxy chose — the routing decision itself, not a guess from addresses.

const PREFIX: &str = "outbound_.";
const SEPARATOR: &str = "_.";

/// The service, port and subset decoded from an Istio outbound SNI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IstioSni {
    /// The service port (not the pod's target port).
    pub port: u16,
    /// The DestinationRule subset; Istio leaves the field empty when the route names none.
    pub subset: Option<String>,
    /// The service FQDN, e.g. `reviews.default.svc.cluster.local`.
    pub host: String,
}

/// Decodes an Istio outbound SNI; anything else (a plain host name, a malformed port,
/// missing fields) gives `None`.
///
/// Subset names are DNS labels and cannot contain `_.`, so the host is everything after
/// the separator that follows the subset, dots included.
pub fn parse_istio_sni(sni: &str) -> Option<IstioSni> {
    let rest = sni.strip_prefix(PREFIX)?;
    let (port, rest) = rest.split_once(SEPARATOR)?;
    let (subset, host) = rest.split_once(SEPARATOR)?;

    let port = parse_port(port)?;
    if !subset.is_empty() && !is_subset_name(subset) {
        return None;
    }
    if !is_host_name(host) {
        return None;
    }
    Some(IstioSni {
        port,
        subset: (!subset.is_empty()).then(|| subset.to_owned()),
        host: host.to_owned(),
    })
}

/// Only plain decimal digits: `u16::from_str` would also take a leading `+`.
fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok().filter(|&port| port != 0)
}

/// Istio validates subset names as DNS labels. Dots are accepted too: they cannot be
/// mistaken for the separator, and dropping such a flow would hide traffic rather than
/// flag it.
fn is_subset_name(subset: &str) -> bool {
    subset
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A host as Istio writes it into the SNI: a non-empty run of visible ASCII with no
/// further separator (a second `_.` would mean the fields were shifted).
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && !host.contains(SEPARATOR)
        && !host.starts_with('.')
        && host.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_subset_field_means_no_subset() {
        assert_eq!(
            parse_istio_sni("outbound_.9080_._.reviews.default.svc.cluster.local"),
            Some(IstioSni {
                port: 9080,
                subset: None,
                host: "reviews.default.svc.cluster.local".into(),
            })
        );
    }

    #[test]
    fn named_subset_is_decoded() {
        assert_eq!(
            parse_istio_sni("outbound_.80_.v1_.frontend.default.svc.cluster.local"),
            Some(IstioSni {
                port: 80,
                subset: Some("v1".into()),
                host: "frontend.default.svc.cluster.local".into(),
            })
        );
    }

    #[test]
    fn subset_with_dashes_and_dots_keeps_host_intact() {
        let sni = parse_istio_sni("outbound_.443_.canary-v2.1_.api.shop.svc.cluster.local")
            .expect("valid Istio SNI");
        assert_eq!(sni.port, 443);
        assert_eq!(sni.subset.as_deref(), Some("canary-v2.1"));
        assert_eq!(sni.host, "api.shop.svc.cluster.local");
    }

    #[test]
    fn short_and_external_hosts_are_accepted() {
        let sni = parse_istio_sni("outbound_.8080_._.reviews").expect("valid Istio SNI");
        assert_eq!(sni.host, "reviews");
        let sni = parse_istio_sni("outbound_.443_._.www.example.com").expect("valid Istio SNI");
        assert_eq!((sni.port, sni.host.as_str()), (443, "www.example.com"));
    }

    #[test]
    fn port_boundaries() {
        assert_eq!(
            parse_istio_sni("outbound_.65535_._.a.b").map(|s| s.port),
            Some(65535)
        );
        assert_eq!(
            parse_istio_sni("outbound_.1_._.a.b").map(|s| s.port),
            Some(1)
        );
        assert_eq!(parse_istio_sni("outbound_.65536_._.a.b"), None);
        assert_eq!(parse_istio_sni("outbound_.0_._.a.b"), None);
    }

    #[test]
    fn malformed_sni_is_rejected() {
        for sni in [
            "",
            "reviews.default.svc.cluster.local",
            "outbound_.",
            "outbound_.9080",
            "outbound_.9080_.",
            "outbound_.9080_.v1",
            "outbound_.9080_.v1_.",
            "outbound_.9080_._.",
            "outbound_.http_._.reviews.default.svc.cluster.local",
            "outbound_.+80_._.reviews.default.svc.cluster.local",
            "outbound_.-80_._.reviews.default.svc.cluster.local",
            "outbound_._._.reviews.default.svc.cluster.local",
            "outbound_.80_.v 1_.reviews.default.svc.cluster.local",
            "outbound_.80_.v1_.reviews default",
            "outbound_.80_.v1_.a_.b",
            "outbound_.80_.v1_..a",
            "inbound_.80_.v1_.reviews.default.svc.cluster.local",
            "Outbound_.80_.v1_.reviews.default.svc.cluster.local",
            "outbound|80|v1|reviews.default.svc.cluster.local",
        ] {
            assert_eq!(parse_istio_sni(sni), None, "{sni:?} must be rejected");
        }
    }

    #[test]
    fn serializes_with_null_subset() {
        let sni = parse_istio_sni("outbound_.9080_._.reviews.default.svc.cluster.local")
            .expect("valid Istio SNI");
        let json = serde_json::to_value(&sni).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "port": 9080,
                "subset": null,
                "host": "reviews.default.svc.cluster.local",
            })
        );
    }
}
