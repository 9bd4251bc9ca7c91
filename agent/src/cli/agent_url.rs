//! The address of a running agent, as `meshdrift report --url` takes it:
//! `http[s]://HOST[:PORT][/PREFIX]`, or `HOST:PORT` without a scheme (http). Checked
//! before anything connects, so a typo is an error rather than a request
//! to somewhere else (the HTTP library reads an out-of-range port as none,
//! that is port 80).

use std::fmt;

use ureq::http::Uri;

/// A checked agent base URL, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUrl {
    base: String,
}

impl AgentUrl {
    pub fn parse(text: &str) -> Result<AgentUrl, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the URL is empty (expected http://HOST:PORT)".to_owned());
        }
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let uri: Uri = with_scheme
            .parse()
            .map_err(|err| format!("{text:?} is not a URL ({err})"))?;
        let scheme = match uri.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme,
            other => {
                return Err(format!(
                    "unsupported scheme {:?} (expected http://HOST:PORT, or https:// for an \
                     agent started with --tls-cert-file)",
                    other.unwrap_or_default()
                ));
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(format!("{text:?} names no host"));
        };
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are not supported".to_owned());
        }
        if authority.host().is_empty() {
            return Err(format!("{text:?} names no host"));
        }
        // The library's own port accessor hides a port that does not fit.
        let port = authority
            .as_str()
            .strip_prefix(authority.host())
            .and_then(|rest| rest.strip_prefix(':'));
        if let Some(port) = port {
            match port.parse::<u16>() {
                Ok(number) if number > 0 => {}
                _ => return Err(format!("port {port} is not a TCP port (1-65535)")),
            }
        }
        if uri.query().is_some() {
            return Err("a query string is not supported in the agent's URL".to_owned());
        }
        let prefix = uri.path().trim_end_matches('/');
        Ok(AgentUrl {
            base: format!("{scheme}://{authority}{prefix}"),
        })
    }

    pub fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }

    /// The URL of one of the agent's endpoints (`/report`).
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl fmt::Display for AgentUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_urls_and_bare_host_port() {
        let table = [
            ("http://127.0.0.1:9477", "http://127.0.0.1:9477"),
            ("http://127.0.0.1:9477/", "http://127.0.0.1:9477"),
            ("127.0.0.1:9477", "http://127.0.0.1:9477"),
            ("localhost:9477", "http://localhost:9477"),
            ("[::1]:9477", "http://[::1]:9477"),
            ("http://agent", "http://agent"),
            ("http://agent:80/meshdrift/", "http://agent:80/meshdrift"),
            ("  http://agent:9477  ", "http://agent:9477"),
            ("https://agent:9477/", "https://agent:9477"),
        ];
        for (text, base) in table {
            assert_eq!(
                AgentUrl::parse(text).map(|u| u.to_string()),
                Ok(base.to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_what_would_connect_somewhere_else() {
        // (input, a word the message must contain)
        let table = [
            ("http://127.0.0.1:99999", "99999"),
            ("127.0.0.1:99999", "99999"),
            ("http://127.0.0.1:0", "port 0"),
            ("http://127.0.0.1:-1", "port -1"),
            ("ftp://127.0.0.1:9477", "scheme"),
            ("http://", "URL"),
            ("", "empty"),
            ("http://user:pw@host:9477", "credentials"),
            ("http://host:9477/?x=1", "query"),
            ("not a url", "URL"),
        ];
        for (text, says) in table {
            let err = AgentUrl::parse(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
