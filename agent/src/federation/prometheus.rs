//! A client of the Prometheus HTTP API, limited to `/api/v1/query` and
//! `/api/v1/query_range`: the two endpoints Thanos Query and Mimir serve as
//! Prometheus does, so the cluster report works against any of them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::FederationError;

/// The largest answer read for one query.
const MAX_ANSWER_BYTES: u64 = 256 * 1024 * 1024;

/// One series of an answer: its labels and its samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    /// `(unix seconds, value)`.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// How the client reaches Prometheus: the configured HTTP agent (timeout and
/// trusted certificates), the base URL and the bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    timeout: Duration,
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

impl Client {
    /// `agent` must carry the per-query timeout (`timeout`, named in errors).
    pub fn new(agent: ureq::Agent, base: &str, token: Option<String>, timeout: Duration) -> Self {
        Client {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            token,
            timeout,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// An instant query evaluated at `at` (unix seconds).
    pub fn query(&self, expr: &str, at: f64) -> Result<Vec<Series>, FederationError> {
        self.get(
            "/api/v1/query",
            expr,
            &[("query", expr.to_owned()), ("time", seconds(at))],
        )
    }

    /// A range query evaluated at `start`, `start + step`, … up to `end`.
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<Series>, FederationError> {
        self.get(
            "/api/v1/query_range",
            expr,
            &[
                ("query", expr.to_owned()),
                ("start", seconds(start)),
                ("end", seconds(end)),
                ("step", seconds(step.as_secs_f64())),
            ],
        )
    }

    fn get(
        &self,
        path: &str,
        expr: &str,
        params: &[(&str, String)],
    ) -> Result<Vec<Series>, FederationError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        for (key, value) in params {
            request = request.query(key, value);
        }
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        tracing::debug!(%url, query = expr, "querying Prometheus");
        let mut response = request.call().map_err(|err| self.failed(&url, expr, err))?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|err| self.failed(&url, expr, err))?;
        let answer: Answer = match serde_json::from_str(&body) {
            Ok(answer) => answer,
            Err(err) if status.is_success() => {
                return Err(FederationError::Malformed {
                    url,
                    query: expr.to_owned(),
                    reason: err.to_string(),
                });
            }
            Err(_) => {
                return Err(FederationError::Http {
                    url,
                    query: expr.to_owned(),
                    status: status.as_u16(),
                    body: excerpt(&body),
                });
            }
        };
        if answer.status != "success" {
            return Err(FederationError::Prometheus {
                url,
                query: expr.to_owned(),
                error_type: answer.error_type.unwrap_or_else(|| "unknown".to_owned()),
                error: answer
                    .error
                    .unwrap_or_else(|| format!("status {:?}", answer.status)),
            });
        }
        if !status.is_success() {
            return Err(FederationError::Http {
                url,
                query: expr.to_owned(),
                status: status.as_u16(),
                body: excerpt(&body),
            });
        }
        let Some(data) = answer.data else {
            return Err(FederationError::Malformed {
                url,
                query: expr.to_owned(),
                reason: "no `data` in a successful answer".to_owned(),
            });
        };
        decode(&data).map_err(|reason| FederationError::Malformed {
            url,
            query: expr.to_owned(),
            reason,
        })
    }

    fn failed(&self, url: &str, expr: &str, err: ureq::Error) -> FederationError {
        match err {
            ureq::Error::Timeout(_) => FederationError::Timeout {
                url: url.to_owned(),
                query: expr.to_owned(),
                timeout: self.timeout,
            },
            ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => {
                FederationError::Timeout {
                    url: url.to_owned(),
                    query: expr.to_owned(),
                    timeout: self.timeout,
                }
            }
            err => FederationError::Unreachable {
                url: url.to_owned(),
                query: expr.to_owned(),
                source: Box::new(err),
            },
        }
    }
}

/// Vectors and matrices as series; a scalar or string result is not one.
fn decode(data: &Data) -> Result<Vec<Series>, String> {
    if data.result_type != "vector" && data.result_type != "matrix" {
        return Err(format!(
            "the result is a {}, not a vector or matrix",
            data.result_type
        ));
    }
    let raw: Vec<RawSeries> =
        serde_json::from_value(data.result.clone()).map_err(|err| err.to_string())?;
    raw.into_iter()
        .map(|series| {
            let points = series
                .value
                .into_iter()
                .chain(series.values)
                .map(|(at, text)| {
                    sample_value(&text)
                        .map(|value| (at, value))
                        .ok_or_else(|| format!("sample value {text:?} is not a number"))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Series {
                labels: series.metric,
                points,
            })
        })
        .collect()
}

/// Prometheus writes sample values as strings, `NaN` and `±Inf` included.
fn sample_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        text => text.parse().ok(),
    }
}

/// Unix seconds to the millisecond, as the API takes times and steps.
fn seconds(value: f64) -> String {
    format!("{value:.3}")
}

/// The start of an error body, enough to say what it is.
fn excerpt(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &body[..at]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_and_vectors_decode_to_series() {
        let data: Data = serde_json::from_str(
            r#"{"resultType":"matrix","result":[{"metric":{"__name__":"x","node":"n1"},
                "values":[[100,"1"],[130.5,"2.5"]]}]}"#,
        )
        .unwrap();
        let series = decode(&data).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].label("node"), "n1");
        assert_eq!(series[0].label("absent"), "");
        assert_eq!(series[0].points, vec![(100.0, 1.0), (130.5, 2.5)]);

        let data: Data = serde_json::from_str(
            r#"{"resultType":"vector","result":[{"metric":{},"value":[5,"+Inf"]}]}"#,
        )
        .unwrap();
        assert_eq!(decode(&data).unwrap()[0].points, vec![(5.0, f64::INFINITY)]);
    }

    #[test]
    fn a_scalar_or_a_bad_value_is_an_error_not_a_panic() {
        let scalar: Data =
            serde_json::from_str(r#"{"resultType":"scalar","result":[1,"2"]}"#).unwrap();
        assert!(decode(&scalar).unwrap_err().contains("scalar"));
        let bad: Data = serde_json::from_str(
            r#"{"resultType":"vector","result":[{"metric":{},"value":[5,"many"]}]}"#,
        )
        .unwrap();
        assert!(decode(&bad).unwrap_err().contains("many"));
    }

    #[test]
    fn long_error_bodies_are_cut() {
        let long = "x".repeat(1000);
        assert_eq!(excerpt(&long).chars().count(), 301);
        assert_eq!(excerpt(" short \n"), "short");
    }
}
