//! The HTTP/JSON front end for widgets and servers, plus `/metrics`,
//! `/healthz`, `/readyz` and `/shards`.
//!
//! * `GET /v1/profiles/{user_id}?features=a,b`
//! * `GET /v1/recommendations?user_id=u&n=10&context_item_id=i&exclude=a,b`
//!
//! The key comes from `Authorization: Bearer <key>`. Errors are
//! `{"error": {"code": "INVALID_ARGUMENT", "message": "..."}}` with the HTTP
//! status of the gRPC code (`docs/operations.md` has the table).
//!
//! CORS: a preflight (which carries no key) passes for an origin some tenant
//! allows; the actual request must come from an origin *its key's tenant*
//! allows, with a publishable key, else 403. Requests without `Origin`
//! (servers) are not checked.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use weft_proto::v1;

use crate::api::{Api, Call, Method, Routed};
use crate::auth::Principal;
use crate::collect::{Collector, Refused};
use crate::error::{ApiError, code_name};
use crate::gate::Gate;
use crate::route::Forward;
use crate::state::from_proto;

/// Readiness shared by both front ends.
#[derive(Debug, Default)]
pub struct Health {
    pub ready: AtomicBool,
    pub draining: AtomicBool,
}

impl Health {
    pub fn serving(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
struct Http {
    api: Arc<Api>,
    gate: Arc<Gate>,
    registry: Arc<Registry>,
    health: Arc<Health>,
    collector: Arc<Collector>,
    ops: Arc<crate::ops::Ops>,
}

/// The router.
pub fn router(
    api: Arc<Api>,
    gate: Arc<Gate>,
    registry: Arc<Registry>,
    health: Arc<Health>,
    collector: Arc<Collector>,
    ops: Arc<crate::ops::Ops>,
) -> Router {
    let state = Http {
        api,
        gate,
        registry,
        health,
        collector,
        ops,
    };
    let v1 = Router::new()
        .route(
            "/v1/profiles/{user_id}",
            get(get_profile).options(preflight),
        )
        .route(
            "/v1/recommendations",
            get(get_recommendations).options(preflight),
        )
        .route("/v1/events", post(collect_events).options(preflight))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admit));
    Router::new()
        .merge(v1)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/shards", get(shards))
        .route("/ops", get(ops_page))
        .route("/widget.js", get(widget_js))
        .route("/widget/v1.js", get(widget_js))
        .fallback(not_found)
        .with_state(state)
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"code": code_name(e.code()), "message": e.to_string()}});
    (status, axum::Json(body)).into_response()
}

/// `GET /ops`: the operator page ([`crate::ops`]) of the key's tenant, for
/// an `admin` key as a bearer token or as the password of HTTP Basic
/// authentication (so a browser can ask for it).
async fn ops_page(
    State(s): State<Http>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
) -> Response {
    use base64::Engine as _;
    let arrival = arrival_of(&ext);
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|up| up.split_once(':').map(|(_, key)| format!("Bearer {key}")));
    let mut call = http_call(Method::Ops, &headers, arrival);
    if let Some(b) = &basic {
        call.authorization = Some(b);
    }
    let out = s.api.begin(&call).map(|(p, _)| s.ops.render(&p.tenant));
    let code = out.as_ref().map_or_else(|e| e.code(), |_| tonic::Code::Ok);
    s.api
        .metrics
        .observe("http", Method::Ops.name(), code, arrival);
    match out {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            let mut r = error_response(&e);
            if e.code() == tonic::Code::Unauthenticated {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"weft ops\", charset=\"UTF-8\""),
                );
            }
            r
        }
    }
}

/// The longest a read with `after` waits for the speed layer to apply
/// (a widget's budget; only a speed generation being built takes long)
/// those events (then it answers anyway; its freshness says how current).
const READ_AFTER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The recommendations widget (`assets/widget.js`): `/widget.js` follows
/// the newest version, `/widget/v1.js` stays on major version 1.
const WIDGET_JS: &str = include_str!("../assets/widget.js");

async fn widget_js() -> Response {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "public, max-age=300"),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        WIDGET_JS,
    )
        .into_response()
}

async fn not_found() -> Response {
    error_response(&ApiError::NotFound(
        "no such endpoint; see GET /v1/profiles/{user_id} and GET /v1/recommendations".into(),
    ))
}

/// Admission: the same gate as gRPC; the arrival time rides along.
async fn admit(State(s): State<Http>, mut req: Request, next: Next) -> Response {
    let arrival = Instant::now();
    req.extensions_mut().insert(crate::gate::Arrival(arrival));
    match s.gate.enter() {
        Ok(permit) => {
            let out = next.run(req).await;
            drop(permit);
            out
        }
        Err(e) => {
            let path = req.uri().path();
            let method = if path.starts_with("/v1/profiles") {
                "GetProfile"
            } else if path.starts_with("/v1/events") {
                "CollectEvents"
            } else {
                "GetRecommendations"
            };
            s.api.metrics.observe("http", method, e.code(), arrival);
            error_response(&e)
        }
    }
}

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

async fn preflight(State(s): State<Http>, headers: HeaderMap) -> Response {
    match origin(&headers) {
        Some(o) if s.api.keys.any_allows_origin(o) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(o) {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            }
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
            r
        }
        _ => error_response(&ApiError::PermissionDenied(
            "origin not allowed by any tenant".into(),
        )),
    }
}

/// The facts of an HTTP call.
fn http_call(method: Method, headers: &HeaderMap, arrival: Instant) -> Call<'_> {
    Call {
        method,
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        timeout: None,
        hop: None,
        origin: origin(headers),
        arrival,
    }
}

/// Runs a call about `user` for HTTP: key, scope, origin check, then
/// `here` when this node owns the user, else `there` (the call forwarded to
/// the owner).
async fn handle<T, F>(
    s: &Http,
    call: Call<'_>,
    user: &str,
    here: impl FnOnce(&Principal) -> Result<T, ApiError>,
    there: impl FnOnce(Forward) -> F,
    to_json: impl FnOnce(T) -> Value,
) -> Response
where
    F: Future<Output = Result<T, ApiError>>,
{
    let (method, arrival, origin) = (call.method, call.arrival, call.origin);
    let out = match s.api.run_routed("http", &call, user, |p, _| here(p)) {
        Ok(Routed::Here(v)) => Ok(v),
        Ok(Routed::There(f)) => s.api.finish("http", method, arrival, there(f)).await,
        Err(e) => Err(e),
    };
    let mut response = match out {
        Ok(v) => axum::Json(to_json(v)).into_response(),
        Err(e) => error_response(&e),
    };
    allow_origin(s, &mut response, origin);
    response
}

/// CORS: a browser may read an answer to a call from `origin`: every
/// answer but a 403, and a 403 too when some tenant allows the origin (a
/// page the preflight let through learns why: a server-side key, a key of
/// another tenant, a missing scope).
fn allow_origin(s: &Http, response: &mut Response, origin: Option<&str>) {
    if let Some(o) = origin
        && (response.status() != StatusCode::FORBIDDEN || s.api.keys.any_allows_origin(o))
        && let Ok(v) = HeaderValue::from_str(o)
    {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn arrival_of(req_ext: &axum::http::Extensions) -> Instant {
    req_ext
        .get::<crate::gate::Arrival>()
        .map_or_else(Instant::now, |a| a.0)
}

/// `POST /v1/events`: the collector ([`crate::collect`]). 202 with what
/// became of each event; the body's limits and the key's rate answered
/// 413 and 429 (with `Retry-After`).
async fn collect_events(
    State(s): State<Http>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    body: Body,
) -> Response {
    let arrival = arrival_of(&ext);
    let call = http_call(Method::CollectEvents, &headers, arrival);
    let origin = call.origin;
    let out: Result<_, (Refused, Option<StatusCode>)> = async {
        let (principal, _deadline) = s.api.begin(&call).map_err(|e| (e.into(), None))?;
        let bytes = axum::body::to_bytes(body, s.collector.max_body)
            .await
            .map_err(|_| {
                let e = ApiError::InvalidArgument(format!(
                    "the body is larger than {} bytes (serve.collector_max_body_kb)",
                    s.collector.max_body
                ));
                (e.into(), Some(StatusCode::PAYLOAD_TOO_LARGE))
            })?;
        s.collector
            .collect(&principal, &bytes)
            .await
            .map_err(|r| (r, None))
    }
    .await;
    let code = match &out {
        Ok(_) => tonic::Code::Ok,
        Err((r, _)) => r.error.code(),
    };
    s.api
        .metrics
        .observe("http", Method::CollectEvents.name(), code, arrival);
    let mut response = match out {
        Ok(c) => (StatusCode::ACCEPTED, axum::Json(c)).into_response(),
        Err((refused, status)) => {
            let mut r = error_response(&refused.error);
            if let Some(status) = status {
                *r.status_mut() = status;
            }
            if let Some(secs) = refused.retry_after_secs {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            r
        }
    };
    allow_origin(&s, &mut response, origin);
    response
}

/// `a,b,,c` → `[a, b, c]`.
fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn get_profile(
    State(s): State<Http>,
    user: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ext: axum::http::Extensions,
) -> Response {
    let arrival = arrival_of(&ext);
    let user = match user {
        Ok(Path(u)) => u,
        Err(e) => {
            return error_response(&ApiError::InvalidArgument(format!("user_id: {e}")));
        }
    };
    let mut features = Vec::new();
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "features" => features.extend(split_list(&v)),
            other => {
                return error_response(&ApiError::InvalidArgument(format!(
                    "unknown query parameter {:?} (expected features)",
                    crate::state::truncate(other, 32)
                )));
            }
        }
    }
    let req = v1::GetProfileRequest {
        user_id: user,
        features,
    };
    handle(
        &s,
        http_call(Method::GetProfile, &headers, arrival),
        &req.user_id,
        |p| s.api.get_profile(p, &req),
        |f| f.get_profile(req.clone()),
        |r| {
            let mut out = profile_json(r.profile.as_ref());
            out["freshness"] = freshness_json(r.freshness.as_ref());
            out
        },
    )
    .await
}

async fn get_recommendations(
    State(s): State<Http>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ext: axum::http::Extensions,
) -> Response {
    let arrival = arrival_of(&ext);
    let mut req = v1::GetRecommendationsRequest {
        n: 10,
        ..Default::default()
    };
    let mut after = Vec::new();
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "user_id" => req.user_id = v,
            "n" => match v.parse::<u32>() {
                Ok(n) => req.n = n,
                Err(_) => {
                    return error_response(&ApiError::InvalidArgument(format!(
                        "n = {:?} is not a whole number",
                        crate::state::truncate(&v, 32)
                    )));
                }
            },
            "context_item_id" => req.context_item_id = v,
            "exclude" => req.exclude_item_ids.extend(split_list(&v)),
            "after" => match crate::state::parse_read_after(&v) {
                Ok(a) => after = a,
                Err(e) => {
                    return error_response(&ApiError::InvalidArgument(format!(
                        "after: {e} (send the read_after the collector answered with)"
                    )));
                }
            },
            other => {
                return error_response(&ApiError::InvalidArgument(format!(
                    "unknown query parameter {:?} (expected user_id, n, context_item_id, exclude, after)",
                    crate::state::truncate(other, 32)
                )));
            }
        }
    }
    if !after.is_empty() {
        s.api.serving.wait_applied(&after, READ_AFTER_WAIT).await;
    }
    handle(
        &s,
        http_call(Method::GetRecommendations, &headers, arrival),
        &req.user_id,
        |p| s.api.get_recommendations(p, &req),
        |f| f.get_recommendations(req.clone()),
        |r| {
            json!({
                "user_id": req.user_id,
                "items": r.items.iter().map(|i| json!({
                    "item_id": i.item_id,
                    "score": i.score,
                    "reason": v1::RecommendationReason::try_from(i.reason)
                        .map(|r| r.as_str_name())
                        .unwrap_or("RECOMMENDATION_REASON_UNSPECIFIED"),
                    "because": i.because,
                })).collect::<Vec<_>>(),
                "freshness": freshness_json(r.freshness.as_ref()),
            })
        },
    )
    .await
}

fn profile_json(p: Option<&v1::Profile>) -> Value {
    let Some(p) = p else { return json!({}) };
    let features: serde_json::Map<String, Value> = p
        .features
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), feature_json(&from_proto(v)?))))
        .collect();
    json!({
        "user_id": p.user_id,
        "found": p.found,
        "features": features,
        "segments": p.segments,
    })
}

fn feature_json(v: &weft_core::agg::FeatureValue) -> Value {
    use weft_core::agg::FeatureValue as F;
    match v {
        F::Int(i) => json!(i),
        F::Float(f) => json!(f),
        F::Str(s) => json!(s),
        F::List(l) => json!(l),
        F::Ranked(r) => r
            .iter()
            .map(|(v, c)| json!({"value": v, "count": c}))
            .collect(),
    }
}

fn freshness_json(f: Option<&v1::Freshness>) -> Value {
    let Some(f) = f else { return Value::Null };
    json!({
        "batch_view_version": f.batch_view_version,
        "batch_view_created_ms": f.batch_view_created_ms,
        "batch_view_age_ms": f.batch_view_age_ms,
        "batch_offsets": f.batch_offsets.iter()
            .map(|o| json!({"partition": o.partition, "offset": o.offset}))
            .collect::<Vec<_>>(),
        "speed_generation": f.speed_generation,
        "speed_lag_messages": f.speed_lag_messages,
        "speed_lag_ms": f.speed_lag_ms,
        "as_of_ms": f.as_of_ms,
        "speed_lag_as_of_ms": f.speed_lag_as_of_ms,
        "topic_partitions": f.topic_partitions,
        "owned_partitions": f.owned_partitions,
    })
}

async fn metrics(State(s): State<Http>) -> Response {
    let text = weft_speed::metrics::render(&s.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// This node's shard and its peers as it last reached them (no key, like
/// `/metrics`: addresses and partitions only).
async fn shards(State(s): State<Http>) -> Response {
    let mut status = s.api.shards.status();
    status["ready"] = s.health.serving().into();
    axum::Json(status).into_response()
}

async fn readyz(State(s): State<Http>) -> Response {
    if s.health.serving() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Body::from("not ready\n"))
            .unwrap_or_default()
    }
}
