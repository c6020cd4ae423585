//! NDJSON export: every matching event of a range, newest first, streamed
//! from ClickHouse to the client as it is read.
//!
//! No query sorts more than a window of events: the export counts the
//! matching events per hour, cuts the range into windows of at most
//! [`WINDOW_EVENTS`] (an hour holding more is cut into equal parts) and
//! runs one query per window, newest first, each under a memory cap.
//!
//! Wire format: `200` only once the first rows (or the end) are in, so a
//! refusal up to there is an ordinary error answer. A failure after that
//! ends the body with the line `{"error": "..."}`. A client that takes no
//! data for the send timeout is cut off: its query is dropped at once, and
//! the body ends without its last chunk when the client reads again.
//! Exports at once are bounded per client (`429`) and per server (`503`);
//! an export holds its place until its response is dropped, so clients
//! that stopped reading cannot pile up connections with buffered rows.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use analytics_http::{ApiError, Body, BodyError};
use bytes::Bytes;
use clickhouse::query::BytesCursor;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::error::QueryError;
use crate::params::{Filter, Range};
use crate::queries::{HourCount, export_plan_sql, export_window_sql};
use crate::runner::Runner;
use crate::sql::Sql;

/// Most events one window's query sorts.
const WINDOW_EVENTS: u64 = 20_000;

/// Chunks in flight between the ClickHouse reader and the client.
const CHUNKS_BUFFERED: usize = 4;

/// How exports run.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// ClickHouse `max_memory_usage` of every export query.
    pub max_memory_bytes: u64,
    /// Longest the client may take no data before the export is dropped.
    pub send_timeout: Duration,
}

/// Why an export body ended early.
#[derive(Debug, thiserror::Error)]
#[error("the export was cut off: its client took no data for too long")]
struct CutOff;

/// The exports running now, per client and in all.
pub struct Exports {
    server: Arc<Semaphore>,
    per_client: Arc<Mutex<HashMap<String, u32>>>,
    max_per_client: u32,
}

/// One running export's place; given back when dropped.
pub struct Slot {
    _server: OwnedSemaphorePermit,
    client: String,
    per_client: Arc<Mutex<HashMap<String, u32>>>,
}

impl Exports {
    pub fn new(max: u32, max_per_client: u32) -> Exports {
        Exports {
            server: Arc::new(Semaphore::new(max as usize)),
            per_client: Arc::default(),
            max_per_client,
        }
    }

    /// A place for one more export of `client`, if both bounds allow it.
    pub fn admit(&self, client: &str) -> Result<Slot, ApiError> {
        let mut running = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mine = running.get(client).copied().unwrap_or(0);
        if mine >= self.max_per_client {
            return Err(ApiError::TooManyRequests(
                "this client already runs as many exports as it may; retry when one ends",
            ));
        }
        let permit =
            Arc::clone(&self.server)
                .try_acquire_owned()
                .map_err(|_| ApiError::Unavailable {
                    reason: "the server runs as many exports as it may; retry shortly",
                })?;
        running.insert(client.to_owned(), mine + 1);
        Ok(Slot {
            _server: permit,
            client: client.to_owned(),
            per_client: Arc::clone(&self.per_client),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = running.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.client);
            }
        }
    }
}

/// Plans the export, waits for its first rows and answers with them and
/// the rest as they arrive.
pub async fn ndjson(
    runner: &Runner,
    settings: &ExportSettings,
    slot: Slot,
    project: &str,
    range: &Range,
    filters: &[Filter],
) -> Result<Response<Body>, ApiError> {
    // Exports have limits of their own (`max_exports`); a long one must
    // not hold a slot of the questions.
    let runner = Runner {
        max_memory_bytes: Some(settings.max_memory_bytes),
        gate: None,
        summary: None,
        ..runner.clone()
    };
    let hours: Vec<(u64, u64)> = runner
        .fetch_all::<HourCount>(&export_plan_sql(project, range, filters))
        .await?
        .into_iter()
        .map(|row| (u64::from(row.hour), row.n))
        .collect();
    let queries: Vec<Sql> = windows(&hours)
        .into_iter()
        .map(|(from, until)| export_window_sql(project, range, filters, from, until))
        .collect();
    let mut source = Source {
        runner,
        queries: queries.into_iter(),
        cursor: None,
        lines: Lines::default(),
    };
    let first = source.next().await?;
    let (tx, rx) = mpsc::channel(CHUNKS_BUFFERED);
    let finished = Arc::new(AtomicBool::new(false));
    tokio::spawn(pump(
        source,
        first,
        tx,
        Arc::clone(&finished),
        settings.send_timeout,
    ));
    let body = ExportBody {
        chunks: rx,
        finished,
        _slot: slot,
    };
    let mut response = Response::new(body.boxed());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// Bounds `(from, until)` of the windows, newest first, in Unix seconds,
/// from the events per hour (newest hour first); the first window is open
/// above and the last below, so together they cover the whole range.
fn windows(hours: &[(u64, u64)]) -> Vec<(Option<u64>, Option<u64>)> {
    if hours.is_empty() {
        return Vec::new();
    }
    // Lower bounds of every window but the last, newest first.
    let mut cuts = Vec::new();
    let mut pending = 0;
    for &(hour, events) in hours {
        let parts = events.div_ceil(WINDOW_EVENTS).clamp(1, 3600);
        let per_part = events.div_ceil(parts);
        for part in (0..parts).rev() {
            if pending > 0 && pending + per_part > WINDOW_EVENTS {
                cuts.push(hour + (part + 1) * 3600 / parts);
                pending = 0;
            }
            pending += per_part;
        }
    }
    let mut bounds = Vec::with_capacity(cuts.len() + 1);
    let mut until = None;
    for &cut in &cuts {
        bounds.push((Some(cut), until));
        until = Some(cut);
    }
    bounds.push((None, until));
    bounds
}

/// The export's rows: the windows' queries one after the other.
struct Source {
    runner: Runner,
    queries: std::vec::IntoIter<Sql>,
    cursor: Option<BytesCursor>,
    lines: Lines,
}

impl Source {
    /// The next whole lines; `None` after the last window.
    async fn next(&mut self) -> Result<Option<Bytes>, QueryError> {
        loop {
            let Some(cursor) = self.cursor.as_mut() else {
                let Some(sql) = self.queries.next() else {
                    return Ok(None);
                };
                let cursor = self.runner.query(&sql).fetch_bytes("JSONEachRow")?;
                self.cursor = Some(cursor);
                continue;
            };
            match cursor.next().await? {
                Some(chunk) => {
                    if let Some(lines) = self.lines.push(&chunk)? {
                        return Ok(Some(lines));
                    }
                }
                None => {
                    self.lines.end()?;
                    self.cursor = None;
                }
            }
        }
    }
}

/// ClickHouse's output cut into whole lines, each checked to be a row:
/// a server that fails after it began to answer appends its error as text.
#[derive(Default)]
struct Lines {
    /// The start of a line whose end has not arrived yet.
    open: Vec<u8>,
}

impl Lines {
    /// The lines `chunk` completes; `None` while it only extends an open one.
    fn push(&mut self, chunk: &Bytes) -> Result<Option<Bytes>, QueryError> {
        let Some(last) = memchr::memrchr(b'\n', chunk) else {
            self.open.extend_from_slice(chunk);
            return Ok(None);
        };
        let whole = if self.open.is_empty() {
            chunk.slice(..=last)
        } else {
            let mut joined = std::mem::take(&mut self.open);
            joined.extend_from_slice(&chunk[..=last]);
            Bytes::from(joined)
        };
        self.open.extend_from_slice(&chunk[last + 1..]);
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &whole) {
            if whole.get(start) != Some(&b'{') {
                return Err(failed_midway(&whole[start..end]));
            }
            start = end + 1;
        }
        Ok(Some(whole))
    }

    /// The end of one query's output: a line still open was cut.
    fn end(&mut self) -> Result<(), QueryError> {
        if self.open.is_empty() {
            return Ok(());
        }
        let open = std::mem::take(&mut self.open);
        Err(failed_midway(&open))
    }
}

/// What ClickHouse wrote instead of a row, as the error it reports.
fn failed_midway(text: &[u8]) -> QueryError {
    let text = String::from_utf8_lossy(&text[..text.len().min(2_000)]).into_owned();
    QueryError::from(clickhouse::error::Error::BadResponse(text))
}

/// The last line of an export that failed after it began.
fn error_line(error: ApiError) -> Bytes {
    if let ApiError::Internal(source) = &error {
        tracing::error!(error = %source, "export failed midway");
    }
    let mut line = json!({"error": error.to_string()}).to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

/// Moves the export's lines to the client until the end, a failure (then
/// the error line), the client's leaving, or the send timeout. The
/// ClickHouse query goes with it.
async fn pump(
    mut source: Source,
    mut next: Option<Bytes>,
    tx: mpsc::Sender<Bytes>,
    finished: Arc<AtomicBool>,
    send_timeout: Duration,
) {
    loop {
        let (chunk, last) = match next.take() {
            Some(chunk) => (chunk, false),
            None => {
                let read = tokio::select! {
                    read = source.next() => read,
                    () = tx.closed() => return,
                };
                match read {
                    Ok(Some(chunk)) => (chunk, false),
                    Ok(None) => break,
                    Err(error) => (error_line(error.into()), true),
                }
            }
        };
        match tokio::time::timeout(send_timeout, tx.send(chunk)).await {
            Ok(Ok(())) if last => break,
            Ok(Ok(())) => {}
            // The client went away.
            Ok(Err(_)) => return,
            Err(_) => {
                metrics::counter!("analytics_insights_export_stalls_total").increment(1);
                return;
            }
        }
    }
    finished.store(true, Ordering::Release);
}

/// The body of an export: the pump's chunks, then the end, or an error
/// (the connection is cut) when the pump stopped before the end. It holds
/// the export's place until hyper drops it with the response.
struct ExportBody {
    chunks: mpsc::Receiver<Bytes>,
    finished: Arc<AtomicBool>,
    _slot: Slot,
}

impl hyper::body::Body for ExportBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(None) if self.finished.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(Box::new(CutOff)))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 1_767_571_200;

    #[test]
    fn windows_cover_the_range_with_bounded_events() {
        assert!(windows(&[]).is_empty());
        assert_eq!(windows(&[(H, 10)]), [(None, None)]);
        // Small hours share a window; a window closes before it would overflow.
        assert_eq!(
            windows(&[(H + 7200, 15_000), (H + 3600, 5_000), (H, 1)]),
            [(Some(H + 3600), None), (None, Some(H + 3600))]
        );
        // A crowded hour is cut into equal parts.
        assert_eq!(
            windows(&[(H + 3600, 100), (H, 50_000)]),
            [
                (Some(H + 2400), None),
                (Some(H + 1200), Some(H + 2400)),
                (None, Some(H + 1200)),
            ]
        );
        // Even a hundred million events in one hour make at most one window a second.
        assert_eq!(windows(&[(H, 100_000_000)]).len(), 3600);
    }

    #[test]
    fn lines_are_passed_on_whole_and_checked() {
        let mut lines = Lines::default();
        assert_eq!(lines.push(&Bytes::from_static(b"{\"a\":")).unwrap(), None);
        assert_eq!(
            lines
                .push(&Bytes::from_static(b"1}\n{\"b\":2}\n{\"c\""))
                .unwrap(),
            Some(Bytes::from_static(b"{\"a\":1}\n{\"b\":2}\n"))
        );
        assert_eq!(
            lines.push(&Bytes::from_static(b":3}\n")).unwrap(),
            Some(Bytes::from_static(b"{\"c\":3}\n"))
        );
        lines.end().unwrap();
        // 18.16 appends its exception to output it already began.
        let failed = lines.push(&Bytes::from_static(
            b"{\"d\":4}\nCode: 241, e.displayText() = DB::Exception: Memory limit (for query) exceeded\n",
        ));
        assert_eq!(
            failed.unwrap_err().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let mut lines = Lines::default();
        lines.push(&Bytes::from_static(b"{\"e\":")).unwrap();
        assert_eq!(
            lines.end().unwrap_err().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn a_failure_midway_is_one_last_json_line() {
        let line = error_line(ApiError::QueryTimeout("too slow"));
        assert_eq!(&line[..], b"{\"error\":\"too slow\"}\n");
    }

    #[test]
    fn exports_are_bounded_per_client_and_in_all() {
        let exports = Exports::new(3, 2);
        let a1 = exports.admit("a").unwrap();
        let _a2 = exports.admit("a").unwrap();
        assert_eq!(
            exports.admit("a").err().map(|e| e.status()),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        let _b1 = exports.admit("b").unwrap();
        assert_eq!(
            exports.admit("b").err().map(|e| e.status()),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        drop(a1);
        let _b2 = exports.admit("b").unwrap();
        assert_eq!(exports.per_client.lock().unwrap().len(), 2);
    }
}
