//! A blocking HTTP/1.1 client for the synchronous tests: hyper's
//! `client::conn::http1` on one shared multi-thread tokio runtime, each
//! call waiting for its answer with [`block_on`].

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

/// How long a request waits for its answer's head, and then for each part
/// of its body, before it fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `future` to completion on the harness's runtime, from a test's
/// own (non-async) thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testkit")
            .enable_all()
            .build()
            .expect("the test runtime starts")
    });
    RUNTIME.block_on(future)
}

/// Status, lower-cased headers and body of a response.
pub type Reply = (u16, Vec<(String, String)>, String);

/// A keep-alive HTTP/1.1 connection to a loopback port.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    port: u16,
}

impl Conn {
    pub fn open(port: u16) -> io::Result<Conn> {
        block_on(async {
            let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
            Conn::handshake(stream, port).await
        })
    }

    /// A connection from another loopback address (`127.0.0.2`), so the
    /// server sees a peer other than its own.
    pub fn open_from(local: Ipv4Addr, port: u16) -> io::Result<Conn> {
        block_on(async {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((local, 0)))?;
            let stream = socket
                .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .await?;
            Conn::handshake(stream, port).await
        })
    }

    async fn handshake(stream: TcpStream, port: u16) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        // The connection's own task: it ends when the sender is dropped or
        // the server closes, and its errors reach the sender's requests.
        tokio::spawn(connection);
        Ok(Conn { sender, port })
    }

    /// Sends one request (with `host` and `content-length`, then `headers`)
    /// and reads the whole answer.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Reply> {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).map_err(invalid)?)
            .uri(path)
            .header(HOST, format!("127.0.0.1:{}", self.port))
            .header(CONTENT_LENGTH, body.len());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(invalid)?;
        block_on(async {
            self.sender.ready().await.map_err(io::Error::other)?;
            let response = within(self.sender.send_request(request))
                .await?
                .map_err(io::Error::other)?;
            let (head, mut body) = response.into_parts();
            let mut bytes = Vec::new();
            while let Some(frame) = within(body.frame()).await? {
                if let Ok(data) = frame.map_err(io::Error::other)?.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            let headers = head
                .headers
                .iter()
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_owned(), v)
                })
                .collect();
            Ok((
                head.status.as_u16(),
                headers,
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        })
    }
}

/// `future`, failing with `TimedOut` after [`READ_TIMEOUT`].
async fn within<F: Future>(future: F) -> io::Result<F::Output> {
    tokio::time::timeout(READ_TIMEOUT, future)
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::TimedOut, e))
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// One request on a fresh connection.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> io::Result<Reply> {
    Conn::open(port)?.send(method, path, headers, body.as_bytes())
}
