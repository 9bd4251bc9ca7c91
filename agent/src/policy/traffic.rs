//! A cluster's traffic policy beyond the TLS mode — load balancing,
//! connection pool, outlier detection, and the TLS it originates — merged
//! the way Istio merges it (docs/istio-semantics.md, DR-7 and TP-1 to TP-6),
//! with Istio's and Envoy's defaults for what is left unset.

use std::time::Duration;

use super::destination_rule::{MergedRule, TlsLevel};
use crate::model::istio::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection,
    PortTrafficPolicy, SimpleLb, Subset, TlsMode, TrafficPolicy,
};
use crate::observation::{
    Unit,
    conduct::{Balance, DeclaredTraffic, Ejection, Origination},
};

/// Envoy's defaults for outlier detection that Istio leaves in place
/// (TP-5): five consecutive errors, 30 s base ejection, 10 % of the hosts.
const DEFAULT_CONSECUTIVE_ERRORS: u32 = 5;
const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

/// One setting with the level of the DestinationRule it came from.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub value: T,
    pub level: TlsLevel,
}

/// The four settings of a cluster's policy, each from where DR-7 takes it.
#[derive(Debug, Clone, Default)]
pub struct EffectivePolicy {
    pub tls: Option<Sourced<ClientTlsSettings>>,
    pub load_balancer: Option<Sourced<LoadBalancerSettings>>,
    pub connection_pool: Option<Sourced<ConnectionPoolSettings>>,
    pub outlier_detection: Option<Sourced<OutlierDetection>>,
}

impl EffectivePolicy {
    /// One level's settings: its `portLevelSettings` entry for the port,
    /// which replaces the level's policy whole, else the level's own fields.
    fn level(policy: &TrafficPolicy, port: u16, top: TlsLevel, at_port: TlsLevel) -> (Self, bool) {
        fn sourced<T: Clone>(value: Option<&T>, level: &TlsLevel) -> Option<Sourced<T>> {
            value.map(|value| Sourced {
                value: value.clone(),
                level: level.clone(),
            })
        }
        match port_entry(policy, port) {
            Some(entry) => (
                Self {
                    tls: sourced(entry.tls.as_ref(), &at_port),
                    load_balancer: sourced(entry.load_balancer.as_deref(), &at_port),
                    connection_pool: sourced(entry.connection_pool.as_deref(), &at_port),
                    outlier_detection: sourced(entry.outlier_detection.as_deref(), &at_port),
                },
                true,
            ),
            None => (
                Self {
                    tls: sourced(policy.tls.as_ref(), &top),
                    load_balancer: sourced(policy.load_balancer.as_deref(), &top),
                    connection_pool: sourced(policy.connection_pool.as_deref(), &top),
                    outlier_detection: sourced(policy.outlier_detection.as_deref(), &top),
                },
                false,
            ),
        }
    }

    /// The policy of the cluster for `subset` on Service `port`: the rule's
    /// level, then the subset's over it field by field — or whole, when the
    /// subset's came from a port-level entry (Istio's MergeSubsetTrafficPolicy).
    pub fn of(rule: Option<&MergedRule>, subset: Option<&Subset>, port: u16) -> Self {
        let mut merged = rule
            .and_then(|r| r.traffic_policy.as_deref())
            .map(|policy| {
                Self::level(
                    policy,
                    port,
                    TlsLevel::TopLevel,
                    TlsLevel::TopLevelPort(port),
                )
                .0
            })
            .unwrap_or_default();
        if let Some(subset) = subset
            && let Some(policy) = &subset.traffic_policy
        {
            let (own, port_level) = Self::level(
                policy,
                port,
                TlsLevel::Subset(subset.name.clone()),
                TlsLevel::SubsetPort(subset.name.clone(), port),
            );
            if port_level {
                merged = own;
            } else {
                merged.tls = own.tls.or(merged.tls);
                merged.load_balancer = own.load_balancer.or(merged.load_balancer);
                merged.connection_pool = own.connection_pool.or(merged.connection_pool);
                merged.outlier_detection = own.outlier_detection.or(merged.outlier_detection);
            }
        }
        merged
    }

    /// What the checks compare with: the settings read with Istio's
    /// defaults, for a cluster of `host` counted in `unit`.
    pub fn declared(
        &self,
        rule: Option<&MergedRule>,
        host: &str,
        unit: Unit,
        endpoints: Vec<String>,
    ) -> DeclaredTraffic {
        let mut declared = DeclaredTraffic::defaults(unit);
        declared.endpoints = endpoints;
        let at = |level: &TlsLevel| match rule {
            Some(rule) => format!("DestinationRule {}, {level}", rule.name()),
            None => level.to_string(),
        };
        if let Some(lb) = &self.load_balancer {
            declared.load_balancer = balance(&lb.value);
            declared
                .defined_at
                .push(("loadBalancer".to_owned(), at(&lb.level)));
        }
        if let Some(pool) = &self.connection_pool {
            let tcp = pool.value.tcp.as_ref();
            let http = pool.value.http.as_ref();
            declared.max_connections = tcp
                .and_then(|t| t.max_connections)
                .and_then(|n| u64::try_from(n).ok())
                .filter(|&n| n > 0);
            declared.max_requests_per_connection = http
                .and_then(|h| h.max_requests_per_connection)
                .and_then(|n| u64::try_from(n).ok())
                .filter(|&n| n > 0);
            declared.idle_timeout = match unit {
                Unit::Request => http.and_then(|h| h.idle_timeout),
                Unit::Connection => tcp.and_then(|t| t.idle_timeout),
            }
            .map(|d| d.0)
            .filter(|d| !d.is_zero());
            declared
                .defined_at
                .push(("connectionPool".to_owned(), at(&pool.level)));
        }
        if let Some(outlier) = &self.outlier_detection {
            declared.outlier_detection = Some(ejection(&outlier.value));
            declared
                .defined_at
                .push(("outlierDetection".to_owned(), at(&outlier.level)));
        }
        if let Some(tls) = &self.tls
            && matches!(tls.value.mode, TlsMode::Simple | TlsMode::Mutual)
        {
            let sni = tls.value.sni.clone().filter(|s| !s.is_empty());
            declared.tls_origination = Some(Origination {
                mode: tls.value.mode.as_str(),
                sni_declared: sni.is_some(),
                sni: sni.unwrap_or_else(|| host.to_owned()),
            });
            declared.defined_at.push(("tls".to_owned(), at(&tls.level)));
        }
        declared
    }
}

fn port_entry(policy: &TrafficPolicy, port: u16) -> Option<&PortTrafficPolicy> {
    policy
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
}

/// TP-2: a `consistentHash` wins over `simple`; unset or `UNSPECIFIED` is
/// Istio's default, `LEAST_REQUEST`.
fn balance(lb: &LoadBalancerSettings) -> Balance {
    if let Some(hash) = &lb.consistent_hash {
        return match hash.key() {
            "useSourceIp" => Balance::HashSourceIp,
            key => Balance::HashL7 { key },
        };
    }
    match lb.simple {
        None | Some(SimpleLb::Unspecified) => Balance::LeastRequest { default: true },
        Some(SimpleLb::LeastRequest) => Balance::LeastRequest { default: false },
        Some(SimpleLb::RoundRobin) => Balance::RoundRobin,
        Some(SimpleLb::Random) => Balance::Random,
        Some(SimpleLb::LeastConn) => Balance::LeastConn,
        Some(SimpleLb::Passthrough) => Balance::Passthrough,
        Some(SimpleLb::Other) => Balance::Unknown,
    }
}

/// TP-5: which limit ejects an endpoint whose connections fail. Without
/// `splitExternalLocalOriginErrors`, Envoy counts a failed connection as a
/// 503, so both the 5xx and the gateway-error counters see it and the lower
/// enabled limit acts first; `consecutive5xxErrors` left unset is Envoy's 5.
/// With the split, `consecutiveLocalOriginFailures` (default 5) counts them.
fn ejection(outlier: &OutlierDetection) -> Ejection {
    let (limit, from) = if outlier.split_external_local_origin_errors == Some(true) {
        match outlier.consecutive_local_origin_failures {
            Some(n) => (Some(n), "consecutiveLocalOriginFailures"),
            None => (
                Some(DEFAULT_CONSECUTIVE_ERRORS),
                "consecutiveLocalOriginFailures (Envoy's default)",
            ),
        }
    } else {
        let five_xx = match (outlier.consecutive_5xx_errors, outlier.consecutive_errors) {
            (Some(n), _) => (n, "consecutive5xxErrors"),
            (None, Some(n)) => (n, "consecutiveErrors"),
            (None, None) => (
                DEFAULT_CONSECUTIVE_ERRORS,
                "consecutive5xxErrors (Envoy's default)",
            ),
        };
        let gateway = outlier
            .consecutive_gateway_errors
            .map(|n| (n, "consecutiveGatewayErrors"));
        [Some(five_xx), gateway]
            .into_iter()
            .flatten()
            .filter(|(n, _)| *n > 0)
            .min_by_key(|(n, _)| *n)
            .map_or((None, "every counting field is 0"), |(n, from)| {
                (Some(n), from)
            })
    };
    Ejection {
        consecutive_errors: limit.filter(|&n| n > 0),
        limit_from: from.to_owned(),
        base_ejection_time: outlier
            .base_ejection_time
            .map_or(DEFAULT_BASE_EJECTION, |d| d.0),
        max_ejection_percent: outlier
            .max_ejection_percent
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0)
            .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT)
            .min(100),
        min_health_percent: outlier
            .min_health_percent
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0)
            .min(100),
    }
}
