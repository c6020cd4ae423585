//! The insights API: analytics questions answered from ClickHouse.
//!
//! Wire format: `GET /insights/:projectId/<endpoint>?startDate&endDate&timezone&filters…`
//! (and `POST …/funnel` with a JSON body), path segments percent-decoded,
//! JSON answers, NDJSON for event export. Every request is authenticated
//! as a `read` or `root` client of that very project, rate limited per
//! client, and every query is bound to the project with bound parameters
//! and limited in time.
//!
//! Guarantee: answers are what a scan of the raw `events` table gives;
//! read-only, so retrying is always safe.
//!
//! A request goes through: `params` (the query string, validated into
//! typed values; the range and filters parsed once per request in
//! [`Insights::route`]'s handler), `sql` (text and bound values, each value
//! next to its `?`), `runner` (typed RowBinary rows, checked by name
//! against the SELECT list), `queries` (one function per question, its
//! independent queries asked at once, its answer a `Serialize` struct) and
//! `error` (ClickHouse failures classified by exception code, then turned
//! into the client's answer).
//!
//! Besides the questions: `GET /insights/projects` (the projects a client
//! may read: its own, or every project for a `root` client), the dashboard
//! page (`dashboard`), and share links (`share`): `/share/<id>/insights/
//! <projectId>/<endpoint>` answers like `/insights/…` for the one project
//! of the link, admitted by its token (and unlock key) instead of client
//! credentials.

mod dashboard;
mod error;
mod params;
mod queries;
mod runner;
mod share;
mod sql;
mod stream;
mod summary;
mod zone;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

use analytics_config::Config;
use analytics_http::{ApiError, Body, credentials, json};
use analytics_meta::{Authenticator, Meta};
use analytics_store::Store;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::BodyExt;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::params::{Filter, Interval, Range, query_pairs};
use crate::queries::{DIMENSIONS, Dimension, FunnelGroup, Period, Step, TopList};
use crate::runner::Runner;
use crate::stream::{ExportSettings, Exports};

/// Endpoint names, as metric labels.
const ENDPOINTS: &[&str] = &[
    "metrics",
    "timeseries",
    "top",
    "funnel",
    "retention",
    "live",
    "events",
    "profiles",
    "projects",
];

/// Largest funnel request body.
const MAX_FUNNEL_BODY: usize = 64 * 1024;

/// What the insights API needs from outside.
pub struct InsightsDeps {
    pub store: Store,
    pub meta: Meta,
}

/// The insights API as a request handler.
pub struct Insights {
    auth: Authenticator,
    runner: Runner,
    limiter: DefaultKeyedRateLimiter<String>,
    max_range_days: i64,
    exports: Exports,
    export: ExportSettings,
    meta: Meta,
    assets: dashboard::Assets,
    /// Unlock attempts and refused tokens of share links, per address and per link.
    share_guard: DefaultKeyedRateLimiter<String>,
}

/// How a request to a question was admitted.
enum Via<'a> {
    /// Client credentials in the `openpanel-client-*` headers.
    Client,
    /// A share link: its id (from the path), token and unlock key from headers.
    Share(&'a str),
}

/// An endpoint, from the path segments after the project id.
enum Endpoint<'a> {
    Metrics,
    Timeseries,
    Top(&'a str),
    Funnel,
    Retention,
    Live,
    Events,
    Profile(&'a str),
}

impl<'a> Endpoint<'a> {
    fn of(segments: &[&'a str]) -> Option<Endpoint<'a>> {
        Some(match segments {
            ["metrics"] => Endpoint::Metrics,
            ["timeseries"] => Endpoint::Timeseries,
            ["top", dimension] => Endpoint::Top(dimension),
            ["funnel"] => Endpoint::Funnel,
            ["retention"] => Endpoint::Retention,
            ["live"] => Endpoint::Live,
            ["events"] => Endpoint::Events,
            ["profiles", id] => Endpoint::Profile(id),
            _ => return None,
        })
    }
}

/// A question about a range of time: the endpoints that take the shared
/// parameters (`startDate`, `endDate`, `timezone`, and for most `filters`).
enum Ranged {
    /// Compared with the range just before it.
    Metrics,
    Timeseries,
    Top(&'static str, Dimension),
    /// Steps in the query string.
    Funnel,
    /// Steps (and possibly the range) in a JSON body.
    FunnelBody(Value),
    Retention,
    Events,
}

impl Ranged {
    fn takes_filters(&self) -> bool {
        !matches!(self, Ranged::Funnel | Ranged::FunnelBody(_))
    }
}

/// The parameters questions about a range share, parsed once per request
/// in the order their errors have always been reported: the range, the
/// previous range (of a comparison), the filters.
struct Shared {
    range: Range,
    previous: Option<Range>,
    filters: Vec<Filter>,
}

impl Shared {
    fn parse(
        ranged: &Ranged,
        params: &HashMap<String, String>,
        max_days: i64,
    ) -> Result<Shared, ApiError> {
        let range = params::range(params, max_days)?;
        let previous = match ranged {
            Ranged::Metrics => Some(range.previous()?),
            _ => None,
        };
        let filters = if ranged.takes_filters() {
            params::filters(params.get("filters").map(String::as_str), "filters")?
        } else {
            Vec::new()
        };
        Ok(Shared {
            range,
            previous,
            filters,
        })
    }
}

/// The path's segments, percent-decoded (a profile id may hold `/`, `?`
/// or spaces); empty segments are skipped.
fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| {
                    ApiError::bad_request("the path is not UTF-8 once percent-decoded", None)
                })
        })
        .collect()
}

impl Insights {
    pub fn new(config: &Config, deps: InsightsDeps) -> Arc<Insights> {
        let per_second =
            NonZeroU32::new(config.insights.rate_limit_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = per_second.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        Arc::new(Insights {
            meta: deps.meta.clone(),
            assets: dashboard::Assets::new(),
            share_guard: RateLimiter::keyed(
                Quota::per_minute(NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN)),
            ),
            auth: Authenticator::new(
                deps.meta,
                Duration::from_millis(config.edge.auth_cache_ttl_ms),
            ),
            runner: Runner {
                store: deps.store,
                timeout: Duration::from_millis(config.insights.query_timeout_ms),
                max_memory_bytes: None,
                gate: Some(Arc::new(Semaphore::new(
                    config.insights.max_queries as usize,
                ))),
                summary: config
                    .insights
                    .summary
                    .then(|| Arc::new(summary::Verdicts::default())),
            },
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            max_range_days: i64::from(config.insights.max_range_days),
            exports: Exports::new(
                config.insights.max_exports,
                config.insights.max_exports_per_client,
            ),
            export: ExportSettings {
                max_memory_bytes: config.insights.export_max_memory_bytes,
                send_timeout: Duration::from_millis(config.insights.export_send_timeout_ms),
            },
        })
    }

    /// Whether `path` is one of this API's: the questions, the dashboard
    /// and share links.
    pub fn serves(path: &str) -> bool {
        path.starts_with("/insights/")
            || path == "/dashboard"
            || path.starts_with("/dashboard/")
            || path.starts_with("/share/")
    }

    /// Answers requests under `/insights/`, the dashboard and share links;
    /// `None` for other paths.
    pub async fn route<B>(&self, req: Request<B>, peer: SocketAddr) -> Option<Response<Body>>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path().to_owned();
        if let Some(response) = self.assets.answer(&path, req.method(), req.headers()) {
            return Some(response);
        }
        let (rest, share) = match path.strip_prefix("/share/") {
            Some(rest) => match rest.split_once('/') {
                Some((id, "info")) => return Some(self.share_info(id, &req, peer.ip()).await),
                Some((id, "unlock")) => return Some(self.share_unlock(id, req, peer).await),
                Some((id, rest)) => (rest.strip_prefix("insights/")?, Some(id.to_owned())),
                None => return None,
            },
            None => (path.strip_prefix("/insights/")?, None),
        };
        let via = match &share {
            Some(id) => Via::Share(id),
            None => Via::Client,
        };
        let started = std::time::Instant::now();
        let (label, response) = match segments(rest) {
            Ok(parts) => {
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                let endpoint = match parts.as_slice() {
                    ["projects"] => "projects",
                    _ => parts.get(1).copied().unwrap_or(""),
                };
                let label: &'static str = ENDPOINTS
                    .iter()
                    .find(|e| **e == endpoint)
                    .copied()
                    .unwrap_or("unknown");
                let response = match self.handle(&parts, via, peer.ip(), req).await {
                    Ok(response) => response,
                    Err(error) => error.into_response(),
                };
                (label, response)
            }
            Err(error) => ("unknown", error.into_response()),
        };
        metrics::counter!("analytics_insights_requests_total",
            "endpoint" => label, "status" => response.status().as_u16().to_string())
        .increment(1);
        metrics::histogram!("analytics_insights_request_seconds", "endpoint" => label)
            .record(started.elapsed().as_secs_f64());
        Some(response)
    }

    /// Admits a client: it must read insights, of `project` unless it is a
    /// `root` client; the key its rate limit and exports are counted by.
    /// Lookups of unknown client ids are charged to `ip`.
    async fn admit_client(
        &self,
        headers: &hyper::HeaderMap,
        ip: std::net::IpAddr,
        project: Option<&str>,
    ) -> Result<(Arc<analytics_meta::ClientRecord>, String), ApiError> {
        let lookup = self.auth.authenticate(credentials(headers));
        let caller = analytics_meta::charged_to(ip, lookup).await?;
        if !caller.client.kind.can_read() {
            return Err(ApiError::Forbidden("this client may not read insights"));
        }
        let root = caller.client.kind == analytics_meta::ClientKind::Root;
        if let Some(project) = project
            && caller.client.project.id != project
            && !root
        {
            return Err(ApiError::Forbidden(
                "this client belongs to another project",
            ));
        }
        let key = caller.client.id.clone();
        Ok((caller.client, key))
    }

    async fn handle<B>(
        &self,
        parts: &[&str],
        via: Via<'_>,
        peer: std::net::IpAddr,
        req: Request<B>,
    ) -> Result<Response<Body>, ApiError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let (["projects"], Via::Client) = (parts, &via) {
            let (client, key) = self.admit_client(req.headers(), peer, None).await?;
            if self.limiter.check_key(&key).is_err() {
                return Err(ApiError::TooManyRequests(
                    "too many insights requests; retry shortly",
                ));
            }
            if req.method() != Method::GET {
                return Err(ApiError::MethodNotAllowed);
            }
            return ok(&self.projects(&client).await?);
        }
        let project = *parts.first().ok_or(ApiError::NotFound)?;
        let key = match via {
            Via::Client => {
                self.admit_client(req.headers(), peer, Some(project))
                    .await?
                    .1
            }
            Via::Share(id) => {
                let share = self.admit_share(id, peer, req.headers()).await?;
                if share.project_id != project {
                    return Err(ApiError::Forbidden(
                        "this share link is for another project",
                    ));
                }
                format!("share:{}", share.id)
            }
        };
        if self.limiter.check_key(&key).is_err() {
            return Err(ApiError::TooManyRequests(
                "too many insights requests; retry shortly",
            ));
        }
        let endpoint = Endpoint::of(&parts[1..]).ok_or(ApiError::NotFound)?;
        let method = req.method().clone();
        let allowed = match endpoint {
            Endpoint::Funnel => method == Method::GET || method == Method::POST,
            _ => method == Method::GET,
        };
        if !allowed {
            return Err(ApiError::MethodNotAllowed);
        }
        let mut params = query_pairs(req.uri().query());
        let runner = &self.runner;
        let ranged = match endpoint {
            Endpoint::Live => return ok(&queries::live(runner, project).await?),
            Endpoint::Profile(profile_id) => {
                return match queries::profile(runner, project, profile_id).await? {
                    Some(profile) => ok(&profile),
                    None => Err(ApiError::NotFound),
                };
            }
            Endpoint::Metrics => Ranged::Metrics,
            Endpoint::Timeseries => Ranged::Timeseries,
            // Checked before the range: it is part of the path.
            Endpoint::Top(dimension) => {
                let (name, dimension) = top_dimension(dimension)?;
                Ranged::Top(name, dimension)
            }
            Endpoint::Funnel if method == Method::POST => {
                let body = read_json(req).await?;
                for key in ["startDate", "endDate", "timezone"] {
                    if let Some(v) = body.get(key).and_then(Value::as_str) {
                        params.insert(key.into(), v.into());
                    }
                }
                Ranged::FunnelBody(body)
            }
            Endpoint::Funnel => Ranged::Funnel,
            Endpoint::Retention => Ranged::Retention,
            Endpoint::Events => Ranged::Events,
        };
        let shared = Shared::parse(&ranged, &params, self.max_range_days)?;
        let (range, filters) = (&shared.range, shared.filters.as_slice());
        match ranged {
            Ranged::Metrics => {
                let previous = match &shared.previous {
                    Some(previous) => previous,
                    None => &range.previous()?,
                };
                ok(&queries::metrics(runner, project, range, previous, filters).await?)
            }
            Ranged::Timeseries => {
                let interval = Interval::parse(params.get("interval").map(String::as_str))?;
                if interval == Interval::Hour && (range.end - range.start).whole_days() > 31 {
                    return Err(ApiError::bad_request(
                        "hourly series span at most 31 days",
                        Some("interval".into()),
                    ));
                }
                ok(&queries::timeseries(runner, project, range, filters, interval).await?)
            }
            Ranged::Top(name, dimension) => {
                let limit = params::limit(&params, 10, 1_000)?;
                let top = queries::top(runner, project, range, filters, dimension, limit).await?;
                ok(&TopList {
                    dimension: name,
                    rows: top,
                })
            }
            Ranged::Funnel => {
                let steps: Vec<Step> = params
                    .get("steps")
                    .map(|s| {
                        s.split(',')
                            .map(|n| Step {
                                name: n.trim().to_owned(),
                                filters: Vec::new(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let window = window(
                    params
                        .get("window")
                        .map(|w| Value::String(w.clone()))
                        .as_ref(),
                )?;
                let group = funnel_group(params.get("groupBy").map(String::as_str))?;
                check_steps(&steps)?;
                ok(&queries::funnel(runner, project, range, &steps, window, group).await?)
            }
            Ranged::FunnelBody(body) => {
                let steps = funnel_steps(&body)?;
                let window = window(body.get("window"))?;
                let group = funnel_group(body.get("groupBy").and_then(Value::as_str))?;
                ok(&queries::funnel(runner, project, range, &steps, window, group).await?)
            }
            Ranged::Retention => {
                let period = match params.get("period").map(String::as_str).unwrap_or("day") {
                    "day" => Period::Day,
                    "week" => Period::Week,
                    _ => {
                        return Err(ApiError::bad_request(
                            "period must be day or week",
                            Some("period".into()),
                        ));
                    }
                };
                ok(&queries::retention(runner, project, range, filters, period).await?)
            }
            Ranged::Events => {
                match params.get("format").map(String::as_str).unwrap_or("json") {
                    "json" => {}
                    "ndjson" => {
                        let slot = self.exports.admit(&key)?;
                        return stream::ndjson(runner, &self.export, slot, project, range, filters)
                            .await;
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            "format must be json or ndjson",
                            Some("format".into()),
                        ));
                    }
                }
                let limit = params::limit(&params, 100, 1_000)?;
                let cursor = params.get("cursor").map(|c| parse_cursor(c)).transpose()?;
                let page = queries::events(runner, project, range, filters, cursor.as_ref(), limit)
                    .await?;
                ok(&page)
            }
        }
    }
}

/// A `200` with `body` as JSON. Written through a `Value`, whose maps are
/// sorted: the keys of every answer come out in alphabetical order, as
/// they always have, whatever the order of a struct's fields.
fn ok<T: Serialize>(body: &T) -> Result<Response<Body>, ApiError> {
    Ok(json(StatusCode::OK, &serde_json::to_value(body)?))
}

/// The top-list dimension named in the path.
fn top_dimension(name: &str) -> Result<(&'static str, Dimension), ApiError> {
    DIMENSIONS
        .iter()
        .find(|(known, _)| *known == name)
        .copied()
        .ok_or_else(|| {
            let known: Vec<&str> = DIMENSIONS.iter().map(|(n, _)| *n).collect();
            ApiError::bad_request(
                format!("unknown dimension; use one of {}", known.join(", ")),
                Some("dimension".into()),
            )
        })
}

fn parse_cursor(cursor: &str) -> Result<(u64, String), ApiError> {
    cursor
        .split_once(':')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_owned())))
        .ok_or_else(|| {
            ApiError::bad_request(
                "cursor must be the `next` value of a previous page",
                Some("cursor".into()),
            )
        })
}

fn window(value: Option<&Value>) -> Result<u64, ApiError> {
    let seconds = match value {
        None => Some(86_400),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    seconds
        .filter(|s| (1..=90 * 86_400).contains(s))
        .ok_or_else(|| {
            ApiError::bad_request(
                "window must be seconds, 1 to 7776000",
                Some("window".into()),
            )
        })
}

fn funnel_group(value: Option<&str>) -> Result<FunnelGroup, ApiError> {
    match value.unwrap_or("session") {
        "session" => Ok(FunnelGroup::Session),
        "profile" => Ok(FunnelGroup::Profile),
        _ => Err(ApiError::bad_request(
            "groupBy must be session or profile",
            Some("groupBy".into()),
        )),
    }
}

fn check_steps(steps: &[Step]) -> Result<(), ApiError> {
    if !(2..=10).contains(&steps.len()) {
        return Err(ApiError::bad_request(
            "a funnel has 2 to 10 steps",
            Some("steps".into()),
        ));
    }
    if steps
        .iter()
        .any(|s| s.name.is_empty() || s.name.len() > 200)
    {
        return Err(ApiError::bad_request(
            "every step needs an event name of 1 to 200 characters",
            Some("steps".into()),
        ));
    }
    Ok(())
}

fn funnel_steps(body: &Value) -> Result<Vec<Step>, ApiError> {
    let items = body
        .get("steps")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("steps must be an array", Some("steps".into())))?;
    let steps = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let name = item.get("name").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request("every step needs a name", Some(format!("steps[{i}].name")))
            })?;
            let filters = match item.get("filters") {
                None | Some(Value::Null) => Vec::new(),
                Some(f) => params::filters_from_json(f, &format!("steps[{i}].filters"))?,
            };
            Ok(Step {
                name: name.to_owned(),
                filters,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    check_steps(&steps)?;
    Ok(steps)
}

async fn read_json<B>(req: Request<B>) -> Result<Value, ApiError>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body = http_body_util::Limited::new(req.into_body(), MAX_FUNNEL_BODY);
    let bytes = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .map_err(|_| ApiError::Timeout)?
        .map_err(|_| ApiError::TooLarge {
            limit: MAX_FUNNEL_BODY,
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}"), None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The field of a refused request.
    fn field(result: Result<Shared, ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest { field, .. }) => field.unwrap_or_default(),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn shared_parameters_are_parsed_once_for_every_ranged_endpoint() {
        let good = params(&[
            ("startDate", "2026-01-05"),
            ("endDate", "2026-01-06"),
            ("timezone", "asia/seoul"),
            ("filters", r#"[{"key":"country","value":"KR"}]"#),
        ]);
        let shared = Shared::parse(&Ranged::Metrics, &good, 400).unwrap();
        assert_eq!(shared.range.timezone, "Asia/Seoul");
        assert_eq!(shared.filters.len(), 1);
        assert_eq!(
            shared.previous.map(|p| p.start_sql()).as_deref(),
            Some("2026-01-03 00:00:00")
        );
        for ranged in [Ranged::Timeseries, Ranged::Retention, Ranged::Events] {
            let shared = Shared::parse(&ranged, &good, 400).unwrap();
            assert_eq!((shared.filters.len(), shared.previous), (1, None));
        }
        // Funnels have filters per step; a `filters` parameter is ignored.
        let mut bad_filters = good.clone();
        bad_filters.insert("filters".into(), "not json".into());
        for ranged in [Ranged::Funnel, Ranged::FunnelBody(Value::Null)] {
            assert!(
                Shared::parse(&ranged, &bad_filters, 400)
                    .unwrap()
                    .filters
                    .is_empty()
            );
        }
        assert_eq!(
            field(Shared::parse(&Ranged::Events, &bad_filters, 400)),
            "filters"
        );
    }

    #[test]
    fn shared_parameters_report_the_first_fault_as_ever() {
        // The range first, then the previous range, then the filters.
        let faults = params(&[
            ("startDate", "1970-01-05"),
            ("endDate", "1970-01-06"),
            ("filters", "not json"),
        ]);
        assert_eq!(
            field(Shared::parse(&Ranged::Metrics, &faults, 400)),
            "startDate"
        );
        assert_eq!(
            field(Shared::parse(&Ranged::Timeseries, &faults, 400)),
            "filters"
        );
        let no_start = params(&[("endDate", "2026-01-06"), ("filters", "not json")]);
        assert_eq!(
            field(Shared::parse(&Ranged::Metrics, &no_start, 400)),
            "startDate"
        );
        let long = params(&[("startDate", "2026-01-05"), ("endDate", "2026-03-06")]);
        match Shared::parse(&Ranged::Funnel, &long, 31) {
            Err(ApiError::BadRequest { message, field }) => {
                assert_eq!(message, "the range may span at most 31 days");
                assert_eq!(field.as_deref(), Some("endDate"));
            }
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn top_lists_name_a_known_dimension() {
        assert_eq!(
            top_dimension("entry_pages").unwrap(),
            ("entry_pages", Dimension::EntryPages)
        );
        match top_dimension("' OR 1=1") {
            Err(ApiError::BadRequest { message, field }) => {
                assert!(message.starts_with("unknown dimension; use one of pages, "));
                assert_eq!(field.as_deref(), Some("dimension"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// The published OpenAPI description names every endpoint and dimension.
    #[test]
    fn openapi_description_covers_the_api() {
        let text = include_str!("../../../schemas/openapi.json");
        let spec: Value = serde_json::from_str(text).expect("openapi.json is JSON");
        let paths = spec["paths"].as_object().expect("paths");
        for endpoint in ENDPOINTS {
            assert!(
                paths.keys().any(|p| {
                    p.starts_with(&format!("/insights/{{projectId}}/{endpoint}"))
                        || *p == format!("/insights/{endpoint}")
                }),
                "{endpoint} is not described"
            );
        }
        let parameters =
            spec["paths"]["/insights/{projectId}/top/{dimension}"]["get"]["parameters"]
                .as_array()
                .expect("parameters");
        let described = &parameters
            .iter()
            .find(|p| p["name"] == "dimension")
            .expect("dimension parameter")["schema"]["enum"];
        let names: Vec<&str> = DIMENSIONS.iter().map(|(n, _)| *n).collect();
        assert_eq!(described, &json!(names));
        for route in [
            "/track",
            "/identify",
            "/increment",
            "/decrement",
            "/batch",
            "/dashboard",
            "/share/{shareId}",
            "/share/{shareId}/info",
            "/share/{shareId}/unlock",
            "/share/{shareId}/insights/{projectId}/{endpoint}",
            "/tracker.js",
        ] {
            assert!(paths.contains_key(route), "{route}");
        }
    }
}
