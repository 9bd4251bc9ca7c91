//! `--auth kubernetes`: the report and the metrics only for callers the
//! cluster knows and allows, checked the way kube-rbac-proxy and the
//! kubelet check their callers. A request's bearer token is authenticated
//! with a TokenReview, and the user it names is authorised with a
//! SubjectAccessReview for the request's path as a non-resource URL and the
//! verb `get` — so access is granted with ordinary RBAC:
//!
//! ```yaml
//! rules:
//!   - nonResourceURLs: ["/metrics"]
//!     verbs: ["get"]
//! ```
//!
//! Without a token (or with one the API server does not accept) the answer
//! is 401; with a valid token whose user lacks the grant, 403. Both
//! decisions are cached briefly, so a scrape every few seconds costs the API
//! server two reviews per caller and cache period, not two per scrape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// How long an allowed caller is remembered: the kubelet's default for its
/// webhook authentication and authorisation caches.
const ALLOWED_TTL: Duration = Duration::from_secs(120);
/// How long a refusal is remembered (the kubelet's unauthorised-cache default):
/// a grant added a moment ago takes effect within this.
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Decisions kept at most; when full, expired ones are dropped, and if none
/// has expired the cache starts over (a flood of distinct tokens must not
/// grow memory).
const MAX_CACHED: usize = 4096;
/// A review the API server has not answered by then is an error (503), so a
/// slow API server does not hold scrapes open.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request may do, as the API server decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No token, or one the API server does not accept.
    Unauthenticated(String),
    /// A valid token whose user may not `get` the path.
    Forbidden {
        user: String,
        reason: String,
    },
}

/// Why a decision could not be made (the API server cannot be asked).
#[derive(Debug, thiserror::Error)]
#[error("cannot review the caller's token with the API server: {0}")]
pub struct ReviewError(#[from] kube::Error);

/// The two reviews; behind a trait so the decision logic and the cache are
/// tested without an API server (the real server is tested end to end).
pub trait Reviewer: Send + Sync + 'static {
    /// The user a token belongs to, or why it is not accepted.
    fn authenticate(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Result<UserInfo, String>, ReviewError>> + Send;
    /// Whether `user` may `get` the non-resource URL `path`, with the reason given.
    fn authorize(
        &self,
        user: &UserInfo,
        path: &str,
    ) -> impl Future<Output = Result<(bool, String), ReviewError>> + Send;
}

/// The reviews, asked of the API server the agent's own client reaches.
#[derive(Clone)]
pub struct KubeReviewer {
    client: kube::Client,
}

impl KubeReviewer {
    pub fn new(client: kube::Client) -> Self {
        KubeReviewer { client }
    }
}

impl Reviewer for KubeReviewer {
    async fn authenticate(&self, token: &str) -> Result<Result<UserInfo, String>, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        Ok(match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Ok(user),
            _ => Err(status
                .error
                .filter(|error| !error.is_empty())
                .unwrap_or_else(|| "the token is not valid".to_owned())),
        })
    }

    async fn authorize(&self, user: &UserInfo, path: &str) -> Result<(bool, String), ReviewError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups.clone(),
                uid: user.uid.clone(),
                extra: user.extra.clone(),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some("get".to_owned()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        Ok((status.allowed, status.reason.unwrap_or_default()))
    }
}

/// Decides requests with a [`Reviewer`], remembering decisions briefly.
pub struct Gate<R> {
    reviewer: R,
    cache: Mutex<HashMap<(String, String), (Decision, Instant)>>,
}

impl<R: Reviewer> Gate<R> {
    pub fn new(reviewer: R) -> Self {
        Gate {
            reviewer,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The decision for a request to `path` carrying `token`.
    pub async fn decide(&self, token: Option<&str>, path: &str) -> Result<Decision, ReviewError> {
        let Some(token) = token else {
            return Ok(Decision::Unauthenticated(
                "no bearer token: send `Authorization: Bearer <token>`".to_owned(),
            ));
        };
        let key = (token.to_owned(), path.to_owned());
        if let Some(decision) = self.cached(&key) {
            return Ok(decision);
        }
        let decision = match self.reviewer.authenticate(token).await? {
            Err(reason) => Decision::Unauthenticated(reason),
            Ok(user) => {
                let (allowed, reason) = self.reviewer.authorize(&user, path).await?;
                if allowed {
                    Decision::Allowed
                } else {
                    Decision::Forbidden {
                        user: user.username.unwrap_or_default(),
                        reason,
                    }
                }
            }
        };
        self.remember(key, decision.clone());
        Ok(decision)
    }

    fn cached(&self, key: &(String, String)) -> Option<Decision> {
        let cache = self.lock();
        let (decision, at) = cache.get(key)?;
        let ttl = if *decision == Decision::Allowed {
            ALLOWED_TTL
        } else {
            DENIED_TTL
        };
        (at.elapsed() < ttl).then(|| decision.clone())
    }

    fn remember(&self, key: (String, String), decision: Decision) {
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, at)| at.elapsed() < ALLOWED_TTL);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (decision, Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (Decision, Instant)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The middleware's handle on a [`Gate`] backed by the API server.
pub type KubeGate = Arc<Gate<KubeReviewer>>;

/// Lets a request through only when the API server allows its caller.
pub async fn require_kubernetes_auth(
    State(gate): State<KubeGate>,
    request: Request,
    next: Next,
) -> Response {
    let token = bearer_token(request.headers().get(header::AUTHORIZATION));
    let path = request.uri().path().to_owned();
    let decision = tokio::time::timeout(REVIEW_TIMEOUT, gate.decide(token, &path)).await;
    match decision {
        Ok(Ok(Decision::Allowed)) => next.run(request).await,
        Ok(Ok(Decision::Unauthenticated(reason))) => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"meshdrift\""),
            )],
            format!("unauthorized: {reason}\n"),
        )
            .into_response(),
        Ok(Ok(Decision::Forbidden { user, reason })) => {
            tracing::debug!(%user, %path, %reason, "refused a caller without the grant");
            let because = if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            };
            (
                StatusCode::FORBIDDEN,
                format!(
                    "forbidden: user {user:?} may not get {path}{because}; grant it with a \
                     ClusterRole rule `nonResourceURLs: [\"{path}\"], verbs: [\"get\"]`\n"
                ),
            )
                .into_response()
        }
        Ok(Err(err)) => {
            tracing::warn!(%err, "cannot decide a request");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response()
        }
        Err(_) => {
            tracing::warn!(timeout = ?REVIEW_TIMEOUT, "the API server did not review a token in time");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the API server did not review the caller's token in time\n",
            )
                .into_response()
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(value: Option<&HeaderValue>) -> Option<&str> {
    let value = value?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Knows one token per user; `admin` may get every path, `viewer` only `/metrics`.
    #[derive(Default)]
    struct Table {
        reviews: AtomicUsize,
    }

    impl Reviewer for Table {
        async fn authenticate(&self, token: &str) -> Result<Result<UserInfo, String>, ReviewError> {
            self.reviews.fetch_add(1, Ordering::Relaxed);
            Ok(match token {
                "admin-token" | "viewer-token" => Ok(UserInfo {
                    username: Some(token.trim_end_matches("-token").to_owned()),
                    ..UserInfo::default()
                }),
                _ => Err("token expired".to_owned()),
            })
        }

        async fn authorize(
            &self,
            user: &UserInfo,
            path: &str,
        ) -> Result<(bool, String), ReviewError> {
            self.reviews.fetch_add(1, Ordering::Relaxed);
            let allowed = match user.username.as_deref() {
                Some("admin") => true,
                Some("viewer") => path == "/metrics",
                _ => false,
            };
            Ok((allowed, String::new()))
        }
    }

    #[tokio::test]
    async fn a_request_without_a_valid_token_is_unauthenticated() {
        let gate = Gate::new(Table::default());
        assert!(matches!(
            gate.decide(None, "/report").await.unwrap(),
            Decision::Unauthenticated(_)
        ));
        assert_eq!(
            gate.decide(Some("stolen"), "/report").await.unwrap(),
            Decision::Unauthenticated("token expired".to_owned())
        );
    }

    #[tokio::test]
    async fn a_valid_token_without_the_grant_is_forbidden_per_path() {
        let gate = Gate::new(Table::default());
        assert_eq!(
            gate.decide(Some("viewer-token"), "/metrics").await.unwrap(),
            Decision::Allowed
        );
        assert!(matches!(
            gate.decide(Some("viewer-token"), "/report").await.unwrap(),
            Decision::Forbidden { user, .. } if user == "viewer"
        ));
        assert_eq!(
            gate.decide(Some("admin-token"), "/report").await.unwrap(),
            Decision::Allowed
        );
    }

    #[tokio::test]
    async fn decisions_are_cached_per_token_and_path() {
        let gate = Gate::new(Table::default());
        for _ in 0..5 {
            gate.decide(Some("viewer-token"), "/metrics").await.unwrap();
            gate.decide(Some("viewer-token"), "/report").await.unwrap();
            gate.decide(Some("stolen"), "/metrics").await.unwrap();
        }
        // Two reviews per allowed or forbidden pair, one per unknown token.
        assert_eq!(gate.reviewer.reviews.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let value = |text: &'static str| HeaderValue::from_static(text);
        assert_eq!(bearer_token(Some(&value("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(Some(&value("bearer  abc "))), Some("abc"));
        assert_eq!(bearer_token(Some(&value("Basic abc"))), None);
        assert_eq!(bearer_token(Some(&value("Bearer "))), None);
        assert_eq!(bearer_token(None), None);
    }
}
