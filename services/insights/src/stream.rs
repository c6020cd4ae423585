//! NDJSON export streamed from ClickHouse to the client chunk by chunk, so
//! any range is exported without holding it in memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use analytics_http::{ApiError, Body, BodyError};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use crate::queries::{Runner, store_error};
use crate::sql::Sql;

/// Chunks in flight between the ClickHouse reader and the client.
const CHUNKS_BUFFERED: usize = 4;

/// A body fed by a channel; ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Result<Bytes, BodyError>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

/// Starts the query and answers with its rows as they arrive.
pub fn ndjson(runner: &Runner, sql: &Sql) -> Result<Response<Body>, ApiError> {
    let mut cursor = runner
        .query(sql)
        .fetch_bytes("JSONEachRow")
        .map_err(store_error)?;
    let (tx, rx) = mpsc::channel(CHUNKS_BUFFERED);
    tokio::spawn(async move {
        loop {
            let chunk = match cursor.next().await {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => break,
                Err(e) => Err(Box::new(e) as BodyError),
            };
            let failed = chunk.is_err();
            // The client went away: stop reading from ClickHouse.
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    let mut response = Response::new(ChannelBody(rx).boxed());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}
