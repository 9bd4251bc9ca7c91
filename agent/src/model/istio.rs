//! Typed Istio resources: `networking.istio.io` VirtualService,
//! DestinationRule and ServiceEntry (v1, v1beta1 and v1alpha3 share this
//! schema) and `security.istio.io` PeerAuthentication.
//!
//! Only the fields meshdrift reasons about are modelled; unknown fields are
//! ignored so that newer Istio releases still load. Lists and maps accept an
//! explicit `null`, which hand-written YAML produces often (`http:` with nothing
//! after it).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

pub use super::traffic_policy::{
    ConnectionPoolSettings, ConsistentHashLb, HttpSettings, IstioDuration, LoadBalancerSettings,
    OutlierDetection, SimpleLb, TcpSettings,
};
use super::{Labels, or_default};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct VirtualService {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "or_default")]
    pub spec: VirtualServiceSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    #[serde(default, deserialize_with = "or_default")]
    pub hosts: Vec<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub gateways: Vec<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub http: Vec<HttpRoute>,
    #[serde(default, deserialize_with = "or_default")]
    pub tls: Vec<TlsRoute>,
    #[serde(default, deserialize_with = "or_default")]
    pub tcp: Vec<TcpRoute>,
    #[serde(default, deserialize_with = "or_default")]
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match", deserialize_with = "or_default")]
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default, deserialize_with = "or_default")]
    pub route: Vec<RouteDestination>,
    /// Present when the route answers with a redirect instead of forwarding.
    #[serde(default)]
    pub redirect: Option<serde_json::Value>,
    /// Present when the route answers by itself instead of forwarding.
    #[serde(default)]
    pub direct_response: Option<serde_json::Value>,
    /// Present when the route hands over to another VirtualService.
    #[serde(default)]
    pub delegate: Option<serde_json::Value>,
}

/// Any of Istio's string matchers (`exact`, `prefix`, `regex`); only its
/// presence and a description matter here, never its evaluation.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StringMatch {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.exact, &self.prefix, &self.regex) {
            (Some(v), _, _) => write!(f, "= {v:?}"),
            (_, Some(v), _) => write!(f, "prefix {v:?}"),
            (_, _, Some(v)) => write!(f, "~ {v:?}"),
            _ => write!(f, "present"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uri: Option<StringMatch>,
    #[serde(default)]
    pub scheme: Option<StringMatch>,
    #[serde(default)]
    pub method: Option<StringMatch>,
    #[serde(default)]
    pub authority: Option<StringMatch>,
    #[serde(default, deserialize_with = "or_default")]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default, deserialize_with = "or_default")]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default, deserialize_with = "or_default")]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default, deserialize_with = "or_default")]
    pub source_labels: Labels,
    #[serde(default, deserialize_with = "or_default")]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(default, rename = "match", deserialize_with = "or_default")]
    pub matches: Vec<L4MatchAttributes>,
    #[serde(default, deserialize_with = "or_default")]
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4MatchAttributes {
    #[serde(default, deserialize_with = "or_default")]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default, deserialize_with = "or_default")]
    pub source_labels: Labels,
    #[serde(default, deserialize_with = "or_default")]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsRoute {
    #[serde(default, rename = "match", deserialize_with = "or_default")]
    pub matches: Vec<TlsMatchAttributes>,
    #[serde(default, deserialize_with = "or_default")]
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    #[serde(default, deserialize_with = "or_default")]
    pub sni_hosts: Vec<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default, deserialize_with = "or_default")]
    pub source_labels: Labels,
    #[serde(default, deserialize_with = "or_default")]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: Option<String>,
}

/// One weighted destination of an http, tls or tcp route.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RouteDestination {
    #[serde(default)]
    pub destination: Destination,
    /// Unset and 0 are the same for Istio: the proto zero value.
    #[serde(default)]
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Destination {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PortSelector {
    #[serde(default)]
    pub number: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DestinationRule {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "or_default")]
    pub spec: DestinationRuleSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default, deserialize_with = "or_default")]
    pub subsets: Vec<Subset>,
    #[serde(default, deserialize_with = "or_default")]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default, deserialize_with = "or_default")]
    pub match_labels: Labels,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    // Boxed: most rules set none of them, and an unset one then costs a
    // pointer, not the settings' size, in every rule and subset kept.
    #[serde(default)]
    pub load_balancer: Option<Box<LoadBalancerSettings>>,
    #[serde(default)]
    pub connection_pool: Option<Box<ConnectionPoolSettings>>,
    #[serde(default)]
    pub outlier_detection: Option<Box<OutlierDetection>>,
    #[serde(default, deserialize_with = "or_default")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    #[serde(default)]
    pub port: Option<PortSelector>,
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    // Boxed: most rules set none of them, and an unset one then costs a
    // pointer, not the settings' size, in every rule and subset kept.
    #[serde(default)]
    pub load_balancer: Option<Box<LoadBalancerSettings>>,
    #[serde(default)]
    pub connection_pool: Option<Box<ConnectionPoolSettings>>,
    #[serde(default)]
    pub outlier_detection: Option<Box<OutlierDetection>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientTlsSettings {
    /// `DISABLE` is the proto zero value: `tls: {}` disables TLS.
    #[serde(default, deserialize_with = "or_default")]
    pub mode: TlsMode,
    /// The SNI an originating proxy presents (`SIMPLE`, `MUTUAL`).
    #[serde(default)]
    pub sni: Option<String>,
}

/// `ClientTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    #[default]
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "DISABLE",
            TlsMode::Simple => "SIMPLE",
            TlsMode::Mutual => "MUTUAL",
            TlsMode::IstioMutual => "ISTIO_MUTUAL",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "or_default")]
    pub labels: Labels,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PeerAuthentication {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "or_default")]
    pub spec: PeerAuthenticationSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub mtls: Option<PeerMtls>,
    /// Keyed by the workload's container port. YAML writes the keys as
    /// integers, JSON as strings: both are accepted.
    #[serde(default, deserialize_with = "port_map")]
    pub port_level_mtls: BTreeMap<u32, PeerMtls>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct PeerMtls {
    #[serde(default, deserialize_with = "or_default")]
    pub mode: PeerMode,
}

/// `PeerAuthentication.MutualTLS.Mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerMode {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

impl PeerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerMode::Unset => "UNSET",
            PeerMode::Disable => "DISABLE",
            PeerMode::Permissive => "PERMISSIVE",
            PeerMode::Strict => "STRICT",
        }
    }
}

fn port_map<'de, D>(deserializer: D) -> Result<BTreeMap<u32, PeerMtls>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw: Option<BTreeMap<PortKey, PeerMtls>> = Option::deserialize(deserializer)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key.0, value))
        .collect())
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey(u32);

impl<'de> Deserialize<'de> for PortKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl serde::de::Visitor<'_> for PortVisitor {
            type Value = PortKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortKey, E> {
                u32::try_from(v)
                    .map(PortKey)
                    .map_err(|_| E::custom(format!("port {v} is out of range")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortKey, E> {
                u32::try_from(v)
                    .map(PortKey)
                    .map_err(|_| E::custom(format!("port {v} is out of range")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortKey, E> {
                v.trim()
                    .parse()
                    .map(PortKey)
                    .map_err(|_| E::custom(format!("{v:?} is not a port number")))
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

/// `networking.istio.io` ServiceEntry: hosts the mesh knows besides the
/// Kubernetes Services (docs/istio-semantics.md, CHK-2).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceEntry {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "or_default")]
    pub spec: ServiceEntrySpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    #[serde(default, deserialize_with = "or_default")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs.
    #[serde(default, deserialize_with = "or_default")]
    pub addresses: Vec<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub ports: Vec<ServiceEntryPort>,
    /// `MESH_EXTERNAL` (the default) or `MESH_INTERNAL`; kept as written so
    /// that a value a newer Istio adds still loads.
    #[serde(default)]
    pub location: Option<String>,
    /// `NONE` (the default), `STATIC`, `DNS`, `DNS_ROUND_ROBIN`, `DYNAMIC_DNS`.
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub endpoints: Vec<WorkloadEntry>,
    #[serde(default)]
    pub workload_selector: Option<ServiceEntrySelector>,
    #[serde(default, deserialize_with = "or_default")]
    pub export_to: Vec<String>,
}

impl ServiceEntrySpec {
    /// Outside the mesh unless it says `MESH_INTERNAL`.
    pub fn mesh_external(&self) -> bool {
        self.location.as_deref() != Some("MESH_INTERNAL")
    }

    /// `resolution: NONE` (the default): no virtual IP to balance behind,
    /// clients connect to the address they asked for.
    pub fn passthrough(&self) -> bool {
        self.resolution.as_deref().is_none_or(|r| r == "NONE")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntryPort {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub target_port: Option<u32>,
}

/// One endpoint of a ServiceEntry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkloadEntry {
    #[serde(default)]
    pub address: String,
    /// Port name → the port this endpoint listens on.
    #[serde(default, deserialize_with = "or_default")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, deserialize_with = "or_default")]
    pub labels: Labels,
}

/// A ServiceEntry's `workloadSelector` (its field is `labels`, not
/// `matchLabels`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceEntrySelector {
    #[serde(default, deserialize_with = "or_default")]
    pub labels: Labels,
}
