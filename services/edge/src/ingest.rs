//! The ingestion routes: read, validate, stamp and write events.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use analytics_config::ProxyNet;
use analytics_event::cookieless_device_id;
use analytics_event::{EventKind, Incoming, Limits, RawEvent, Route, now_ms, validate};
use analytics_http::{ApiError, Body, credentials, json_bytes};
use analytics_meta::Caller;
use analytics_streams::partition_for;
use http_body_util::{BodyExt, Limited};
use hyper::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, ORIGIN,
    USER_AGENT,
};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use crate::Edge;

/// Named once: a header looked up by a string is parsed and checked on
/// every request.
static SDK_NAME: HeaderName = HeaderName::from_static("openpanel-sdk-name");
static SDK_VERSION: HeaderName = HeaderName::from_static("openpanel-sdk-version");

const ALLOWED_HEADERS: &str = "content-type, openpanel-client-id, openpanel-client-secret, \
                               openpanel-sdk-name, openpanel-sdk-version";

pub fn route_of(path: &str) -> Option<Route> {
    match path.trim_end_matches('/') {
        "/track" => Some(Route::Envelope),
        "/identify" => Some(Route::Direct(EventKind::Identify)),
        "/increment" => Some(Route::Direct(EventKind::Increment)),
        "/decrement" => Some(Route::Direct(EventKind::Decrement)),
        "/batch" => Some(Route::Batch),
        _ => None,
    }
}

/// Answers a CORS preflight. Which origins may really send is decided per
/// project when the request itself arrives.
pub fn preflight(headers: &HeaderMap) -> Response<Body> {
    let mut response = with_cors(
        headers.get("origin"),
        Response::new(analytics_http::empty()),
    );
    *response.status_mut() = StatusCode::NO_CONTENT;
    let h = response.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("86400"));
    response
}

/// Lets a browser on the request's origin read the answer.
pub fn with_cors(origin: Option<&HeaderValue>, mut response: Response<Body>) -> Response<Body> {
    if let Some(origin) = origin {
        let h = response.headers_mut();
        h.insert("access-control-allow-origin", origin.clone());
        h.insert("vary", HeaderValue::from_static("Origin"));
    }
    response
}

/// A header's text, cut to at most `max` bytes on a character boundary.
fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName, max: usize) -> &'h str {
    let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) else {
        return "";
    };
    let mut end = v.len().min(max);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

/// Whether `value` starts with `prefix`, ignoring ASCII case.
fn starts_with_ignoring_case(value: &[u8], prefix: &[u8]) -> bool {
    value
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// The routes' labels on the request counters.
const ROUTE_LABELS: [&str; 5] = ["track", "identify", "increment", "decrement", "batch"];

/// Handles of the counters every accepted request bumps, registered once:
/// finding a labelled counter by its name and labels costs more than the
/// rest of a request's bookkeeping.
pub(crate) struct AcceptedCounters {
    requests: [metrics::Counter; ROUTE_LABELS.len()],
    events: metrics::Counter,
}

impl AcceptedCounters {
    /// Registers the counters with the process's recorder, which must be
    /// installed by now.
    pub(crate) fn register() -> Self {
        AcceptedCounters {
            requests: ROUTE_LABELS.map(|route| {
                metrics::counter!("analytics_edge_requests_total",
                    "route" => route, "status" => StatusCode::ACCEPTED.as_str().to_owned())
            }),
            events: metrics::counter!("analytics_edge_accepted_events_total"),
        }
    }

    fn requests(&self, route: &str) -> Option<&metrics::Counter> {
        let at = ROUTE_LABELS.iter().position(|label| *label == route)?;
        Some(&self.requests[at])
    }
}

fn route_label(route: Route) -> &'static str {
    match route {
        Route::Envelope => "track",
        Route::Direct(kind) => kind.as_str(),
        Route::Batch => "batch",
    }
}

fn utc_day(ms: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

impl Edge {
    pub(crate) async fn ingest<B>(
        &self,
        route: Route,
        req: Request<B>,
        peer: SocketAddr,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let origin = req.headers().get(ORIGIN).cloned();
        let label = route_label(route);
        let response = match self.ingest_inner(route, req, peer).await {
            Ok(response) => response,
            Err(error) => {
                metrics::counter!("analytics_edge_rejected_requests_total",
                    "route" => label, "reason" => error.reason())
                .increment(1);
                error.into_response()
            }
        };
        match self.counters.requests(label) {
            Some(accepted) if response.status() == StatusCode::ACCEPTED => accepted.increment(1),
            _ => metrics::counter!("analytics_edge_requests_total",
                "route" => label, "status" => response.status().as_str().to_owned())
            .increment(1),
        }
        with_cors(origin.as_ref(), response)
    }

    async fn ingest_inner<B>(
        &self,
        route: Route,
        req: Request<B>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, ApiError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let ip = client_ip(
            self.client_ip_header.as_ref(),
            &self.config.trusted_proxies,
            req.headers(),
            peer.ip(),
        );
        // Lookups of client ids the edge does not know are charged to the
        // sender, as the rate limits see it. Only the lookup runs in that
        // scope: the request's whole future would be copied into it.
        let authenticate = self.auth.authenticate(credentials(req.headers()));
        let caller = analytics_meta::charged_to(ip, authenticate).await?;
        if !caller.client.kind.can_write() {
            return Err(ApiError::Forbidden("this client may not send events"));
        }
        let ip = address_text(ip);
        if let Err(exceeded) = self
            .limits
            .check(&caller.client.project, &caller.client.id, &ip)
        {
            return Err(ApiError::TooManyRequests(match exceeded {
                crate::limits::Exceeded::Client => "this client sends too fast; retry shortly",
                crate::limits::Exceeded::Ip => "too many requests from this address; retry shortly",
            }));
        }
        // Compressed bodies are refused outright: nothing to decompress, no bomb.
        if req
            .headers()
            .get(CONTENT_ENCODING)
            .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return Err(ApiError::UnsupportedMediaType);
        }
        if let Some(content_type) = req.headers().get(CONTENT_TYPE) {
            let ct = content_type.as_bytes();
            // Browsers' sendBeacon posts JSON as text/plain.
            if !(starts_with_ignoring_case(ct, b"application/json")
                || starts_with_ignoring_case(ct, b"text/plain"))
            {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        let limit = match route {
            Route::Batch => self.config.edge.max_batch_bytes,
            _ => self.config.edge.max_body_bytes,
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::TooLarge { limit });
        }
        let (parts, body) = req.into_parts();
        let timeout = Duration::from_millis(self.config.edge.request_timeout_ms);
        let bytes = match within(timeout, Limited::new(body, limit).collect()).await {
            Err(_) => return Err(ApiError::Timeout),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::TooLarge { limit });
            }
            Ok(Err(e)) => {
                return Err(ApiError::BadRequest {
                    message: format!("cannot read request body: {e}"),
                    field: None,
                });
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        let limits = Limits {
            max_batch_events: self.config.edge.max_batch_events,
            max_item_bytes: self.config.edge.max_body_bytes,
            ..Limits::default()
        };
        let incoming = validate(&bytes, route, &limits)?;
        let mut stamp = Stamp {
            received_at_ms: now_ms(),
            ip,
            user_agent: header_str(&parts.headers, &USER_AGENT, 1_000),
            origin: header_str(&parts.headers, &ORIGIN, 500),
            sdk_name: header_str(&parts.headers, &SDK_NAME, 50),
            sdk_version: header_str(&parts.headers, &SDK_VERSION, 50),
            cookieless: None,
        };
        if incoming.iter().any(|e| e.device_id.is_none()) {
            stamp.cookieless = Some(self.cookieless_ids(&caller, &stamp).await?);
        }
        let count = incoming.len();
        let mut entries = Vec::with_capacity(count);
        let mut last = None;
        for event in incoming {
            let raw = stamp.event(&caller, event);
            let partition = partition_for(
                &raw.project_id,
                &partition_key(&raw),
                self.config.redis.partitions,
            );
            // Sized for a typical event, so the encoder rarely grows it.
            let mut payload = Vec::with_capacity(
                256 + raw.user_agent.len() + raw.path.len() + raw.properties.text().len(),
            );
            raw.encode(&mut payload);
            entries.push((partition, payload));
            last = Some(raw);
        }
        self.writer.write(entries).await?;
        self.counters.events.increment(count as u64);
        let body = match (route, last) {
            (Route::Batch, _) | (_, None) => serde_json::to_vec(&json!({"accepted": count})),
            (_, Some(raw)) => serde_json::to_vec(&Accepted {
                device_id: &raw.device_id,
                id: &raw.id,
                session_id: &raw.session_id,
            }),
        }?;
        Ok(json_bytes(StatusCode::ACCEPTED, body))
    }

    /// The request's cookieless device ids under today's and yesterday's
    /// salts (ip and user agent are the request's, so all its events share them).
    async fn cookieless_ids(
        &self,
        caller: &Caller,
        stamp: &Stamp<'_>,
    ) -> Result<(String, String), ApiError> {
        let today = self.cookieless_id(caller, stamp, stamp.received_at_ms);
        let yesterday = self.cookieless_id(caller, stamp, stamp.received_at_ms - 86_400_000);
        Ok((today.await?, yesterday.await?))
    }

    /// The request's cookieless device id under the salt of the day of `day_ms`.
    async fn cookieless_id(
        &self,
        caller: &Caller,
        stamp: &Stamp<'_>,
        day_ms: i64,
    ) -> Result<String, ApiError> {
        let salt = self
            .salts
            .get(&utc_day(day_ms))
            .await
            .map_err(ApiError::from)?;
        Ok(cookieless_device_id(
            &salt,
            &caller.client.project.id,
            &stamp.ip,
            stamp.user_agent,
        ))
    }
}

/// The single-event answer: the ids the SDK keeps.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted<'a> {
    device_id: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    session_id: &'a str,
}

/// `read` within `limit`. A body that has arrived whole by the time the
/// handler asks for it is taken without arming a timer.
async fn within<F: std::future::Future>(
    limit: Duration,
    read: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut read = std::pin::pin!(read);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(output) => Ok(output),
        std::task::Poll::Pending => tokio::time::timeout(limit, read).await,
    }
}

/// A fresh event id, time-ordered (UUID v7).
fn new_event_id() -> String {
    let mut text = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
}

/// An address as text, as `Display` writes it; IPv4, the common case,
/// without the formatting machinery.
fn address_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// What picks an event's partition. A device's events must meet on one
/// partition, whose owner holds the device's session; a cookieless device
/// id changes with the daily salt, so a cookieless visitor is placed by
/// what its ids are made of except the salt (address and user agent), and
/// yesterday's id, whose session may still be open after midnight, lives
/// on the same partition as today's.
fn partition_key<'a>(raw: &'a RawEvent<'_>) -> Cow<'a, str> {
    if raw.previous_device_id.is_empty() {
        Cow::Borrowed(&raw.device_id)
    } else {
        format!("{}\0{}", raw.ip, raw.user_agent).into()
    }
}

/// What the server knows about a request, shared by its events; the
/// header values are borrowed from the request.
struct Stamp<'h> {
    received_at_ms: i64,
    ip: String,
    user_agent: &'h str,
    origin: &'h str,
    sdk_name: &'h str,
    sdk_version: &'h str,
    /// Today's and yesterday's cookieless device ids, when an event needs them.
    cookieless: Option<(String, String)>,
}

impl Stamp<'_> {
    /// The raw event of `event`: what the request shares (its stamp, the
    /// caller's project and origin) is borrowed, not copied per event.
    fn event<'a>(&'a self, caller: &'a Caller, event: Incoming) -> RawEvent<'a> {
        // `cookieless` is set whenever one of the request's events lacks a device id.
        let (device_id, previous_device_id): (Cow<'a, str>, Cow<'a, str>) =
            match (event.device_id, &self.cookieless) {
                (Some(id), _) => (id.into(), "".into()),
                (None, Some((today, yesterday))) => {
                    (today.as_str().into(), yesterday.as_str().into())
                }
                (None, None) => ("".into(), "".into()),
            };
        RawEvent {
            id_from_client: event.event_id.is_some(),
            id: event.event_id.unwrap_or_else(new_event_id).into(),
            previous_device_id,
            client_sent_at_ms: event.client_sent_at_ms,
            project_id: caller.client.project.id.as_str().into(),
            kind: event.kind,
            name: event.name.into(),
            device_id,
            profile_id: event.profile_id.unwrap_or_default().into(),
            session_id: event.session_id.unwrap_or_default().into(),
            client_time_ms: event.client_time_ms,
            received_at_ms: self.received_at_ms,
            ip: self.ip.as_str().into(),
            user_agent: self.user_agent.into(),
            origin: caller.origin.as_deref().unwrap_or(self.origin).into(),
            sdk_name: self.sdk_name.into(),
            sdk_version: self.sdk_version.into(),
            path: event.path.into(),
            referrer: event.referrer.into(),
            properties: event.properties,
            traits: event.traits,
            property: event.property,
            value: event.value,
            alias: event.alias,
        }
    }
}

/// The client's address: the socket peer, unless a trusted proxy sent
/// `header`. Each proxy appends the address it received from, so the list is
/// read from the right and the first address that is not itself a trusted
/// proxy is the client; entries further left are whatever the client claimed.
fn client_ip(
    header: Option<&HeaderName>,
    trusted: &[ProxyNet],
    headers: &HeaderMap,
    peer: IpAddr,
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let Some(name) = header else { return peer };
    if !trusted.is_empty() && !is_trusted(peer) {
        return peer;
    }
    let hops = headers
        .get_all(name)
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','))
        .map(|hop| hop.trim().parse::<IpAddr>().ok());
    for hop in hops {
        match hop {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return ip,
            None => break,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookieless_visitor_keeps_its_partition_when_the_salt_changes() {
        let raw = |device: &str, previous: &str, ip: &str| -> RawEvent {
            serde_json::from_value(json!({
                "id": "e", "project_id": "p", "kind": "track", "name": "a",
                "device_id": device, "previous_device_id": previous,
                "received_at_ms": 0, "ip": ip, "user_agent": "ua"
            }))
            .unwrap()
        };
        let partition = |r: &RawEvent| partition_for(&r.project_id, &partition_key(r), 64);
        let yesterday = raw("id-under-salt-1", "id-under-salt-0", "1.2.3.4");
        let today = raw("id-under-salt-2", "id-under-salt-1", "1.2.3.4");
        assert_eq!(partition(&yesterday), partition(&today));
        let elsewhere: Vec<u16> = (0..8)
            .map(|n| partition(&raw("x", "y", &format!("10.0.0.{n}"))))
            .collect();
        assert!(
            elsewhere.iter().any(|&p| p != elsewhere[0]),
            "addresses spread"
        );
        let sent = raw("client-device", "", "1.2.3.4");
        assert_eq!(partition(&sent), partition_for("p", "client-device", 64));
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.100.9",
            "255.255.255.255",
            "192.168.10.99",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:1.2.3.4",
        ] {
            let address: IpAddr = text.parse().unwrap();
            assert_eq!(address_text(address), address.to_string());
        }
        for octet in 0..=255u8 {
            let address = IpAddr::from([octet, octet, 0, 255 - octet]);
            assert_eq!(address_text(address), address.to_string());
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn from(header: Option<&str>, trusted: &[&str], xff: &[&str], peer: &str) -> IpAddr {
        let trusted: Vec<ProxyNet> = trusted.iter().map(|n| n.parse().unwrap()).collect();
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        let header = header.map(|h| HeaderName::from_bytes(h.as_bytes()).unwrap());
        client_ip(header.as_ref(), &trusted, &headers, ip(peer))
    }

    #[test]
    fn the_peer_is_the_client_without_a_configured_header() {
        assert_eq!(from(None, &[], &["1.2.3.4"], "10.0.0.1"), ip("10.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let h = Some("x-forwarded-for");
        // A client forging the header only prepends to what the proxy adds.
        assert_eq!(
            from(h, &["10.0.0.0/8"], &["6.6.6.6, 1.2.3.4"], "10.0.0.1"),
            ip("1.2.3.4")
        );
        // Two proxies in a row, in one header or in two.
        assert_eq!(
            from(h, &["10.0.0.0/8"], &["1.2.3.4, 10.9.9.9"], "10.0.0.1"),
            ip("1.2.3.4")
        );
        assert_eq!(
            from(h, &["10.0.0.0/8"], &["1.2.3.4", "10.9.9.9"], "10.0.0.1"),
            ip("1.2.3.4")
        );
        // No trusted list: the header is believed, right-most entry.
        assert_eq!(
            from(h, &[], &["6.6.6.6, 1.2.3.4"], "10.0.0.1"),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn untrusted_peers_and_garbage_fall_back_to_the_peer() {
        let h = Some("x-forwarded-for");
        assert_eq!(
            from(h, &["10.0.0.0/8"], &["1.2.3.4"], "8.8.8.8"),
            ip("8.8.8.8")
        );
        assert_eq!(
            from(h, &["10.0.0.0/8"], &["not-an-ip"], "10.0.0.1"),
            ip("10.0.0.1")
        );
        assert_eq!(from(h, &["10.0.0.0/8"], &[], "10.0.0.1"), ip("10.0.0.1"));
        assert_eq!(
            from(h, &["10.0.0.0/8"], &["10.1.1.1"], "10.0.0.1"),
            ip("10.0.0.1")
        );
    }
}
