//! Protocol of a Service port, the way Istio derives it (`appProtocol` first,
//! then the port name's prefix before the first `-`; docs/istio-semantics.md,
//! VS-5).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortProtocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Mongo,
    Redis,
    Mysql,
    Udp,
    /// No recognised name: Istio sniffs it; meshdrift treats it as TCP.
    Unnamed,
}

/// Which route list of a VirtualService applies to a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    Http,
    Tls,
    Tcp,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Http => "http",
            RouteKind::Tls => "tls",
            RouteKind::Tcp => "tcp",
        }
    }
}

impl PortProtocol {
    /// From a Service port's `appProtocol`, `name` and L4 `protocol`.
    pub fn detect(app_protocol: Option<&str>, name: Option<&str>, l4: Option<&str>) -> Self {
        if l4.is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
            return PortProtocol::Udp;
        }
        if let Some(proto) = app_protocol.and_then(Self::parse) {
            return proto;
        }
        let Some(name) = name else {
            return PortProtocol::Unnamed;
        };
        let prefix = name.split('-').next().unwrap_or(name);
        Self::parse(prefix).unwrap_or(PortProtocol::Unnamed)
    }

    fn parse(text: &str) -> Option<Self> {
        let lower = text.to_ascii_lowercase();
        Some(match lower.as_str() {
            "http" | "http_proxy" | "kubernetes.io/ws" => PortProtocol::Http,
            "http2" | "kubernetes.io/h2c" => PortProtocol::Http2,
            "grpc" => PortProtocol::Grpc,
            "grpc-web" => PortProtocol::GrpcWeb,
            "https" | "kubernetes.io/wss" => PortProtocol::Https,
            "tls" => PortProtocol::Tls,
            "tcp" => PortProtocol::Tcp,
            "mongo" => PortProtocol::Mongo,
            "redis" => PortProtocol::Redis,
            "mysql" => PortProtocol::Mysql,
            "udp" => PortProtocol::Udp,
            _ => return None,
        })
    }

    /// `http`, `http2`, `grpc` → http routes; `https`, `tls` → tls routes;
    /// anything else → tcp routes.
    pub fn route_kind(self) -> RouteKind {
        match self {
            PortProtocol::Http
            | PortProtocol::Http2
            | PortProtocol::Grpc
            | PortProtocol::GrpcWeb => RouteKind::Http,
            PortProtocol::Https | PortProtocol::Tls => RouteKind::Tls,
            _ => RouteKind::Tcp,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Http => "HTTP",
            PortProtocol::Http2 => "HTTP2",
            PortProtocol::Grpc => "GRPC",
            PortProtocol::GrpcWeb => "GRPC-Web",
            PortProtocol::Https => "HTTPS",
            PortProtocol::Tls => "TLS",
            PortProtocol::Tcp => "TCP",
            PortProtocol::Mongo => "Mongo",
            PortProtocol::Redis => "Redis",
            PortProtocol::Mysql => "MySQL",
            PortProtocol::Udp => "UDP",
            PortProtocol::Unnamed => "unnamed (TCP)",
        }
    }
}
