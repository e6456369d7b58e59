//! The sending side of ops' API, shared by the CPE, the HAG and the tests.
//!
//! [`post`] sends one request over a TCP connection the caller opened: the
//! CPE binds it to the link it wants (the fixed line, or the mobile link
//! when the line is dead), so this crate never chooses a route. HTTP is
//! hyper's; a report is signed with [`telemetry::sign`] in the
//! `X-Tandem-Signature` header, an operator's request carries
//! `Authorization: Bearer`.
//!
//! With `tls = true` in a sender's `[telemetry]` the connection is TLS
//! ([`Tls`]: rustls, ops' certificate checked against a CA file and the
//! name in `host`) before HTTP starts; the signature and policy are the
//! same either way.
//!
//! [`Queue`] keeps what could not be sent yet, bounded in count and bytes,
//! dropping the oldest first and counting what it dropped; [`Outcome`]
//! says what to do with a report after an answer (sent, keep it for later,
//! or drop it because ops will never take it).
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
pub use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Answers larger than this are cut off (ops' answers are small JSON).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The header carrying a report's signature.
pub const SIGNATURE_HEADER: &str = "x-tandem-signature";

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// HTTP failed (connection closed, malformed answer).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// A header value (host, token) is not valid in HTTP.
    #[error("invalid header value for {0}")]
    Header(&'static str),
    /// No answer within the time allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer's body was too large or broken.
    #[error("reading the answer: {0}")]
    Body(String),
    /// The TLS handshake failed (ops' certificate not trusted or not for
    /// this name, or ops does not speak TLS).
    #[error("TLS with ops: {0}")]
    Tls(std::io::Error),
}

/// TLS to ops: the CA that signs ops' certificate, and the name that
/// certificate must carry.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    /// What it was made of, to compare two configurations.
    ca: PathBuf,
    ca_pem: Arc<[u8]>,
}

impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.ca == other.ca && self.ca_pem == other.ca_pem
    }
}

impl Eq for Tls {}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("name", &self.name)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// Where Debian (and OpenWrt's `ca-bundle`) keep the system's CA bundle.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Tls {
    /// Trusts the certificates of the PEM file `ca` (read now) for ops'
    /// certificate, which must be for `name` (a DNS name or an IP address,
    /// without a port).
    pub fn load(ca: &Path, name: &str) -> Result<Self, String> {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        Self::from_pem(ca, &pem, name)
    }

    /// As [`Tls::load`], from the file's contents.
    pub fn from_pem(ca: &Path, pem: &[u8], name: &str) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in admin::tls::certificates(ca, pem)? {
            roots
                .add(c)
                .map_err(|e| format!("{}: a certificate is unusable: {e}", ca.display()))?;
        }
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| format!("{name:?} is not a DNS name or an IP address"))?;
        let config = rustls::ClientConfig::builder_with_provider(admin::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            name,
            ca: ca.to_owned(),
            ca_pem: pem.into(),
        })
    }

    /// The rustls client configuration (for a blocking client: the lab's).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// The name ops' certificate must carry.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.name
    }
}

/// How a request proves who sends it.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// A CPE's or HAG's report: the keyed hash of the body.
    Signed(&'a telemetry::Key),
    /// A signature computed elsewhere (sent as it is).
    Signature(&'a str),
    /// An operator's token.
    Bearer(&'a str),
    /// Nothing (to test that ops refuses it).
    None,
}

impl std::fmt::Debug for Auth<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        f.write_str(match self {
            Self::Signed(_) => "Signed",
            Self::Signature(_) => "Signature",
            Self::Bearer(_) => "Bearer",
            Self::None => "None",
        })
    }
}

/// An answer from ops.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body (JSON, or empty for `204`).
    pub body: Bytes,
    /// The answer's `X-Tandem-Signature`: ops signs a policy it answers a
    /// report with, with the sender's key.
    pub signature: Option<String>,
}

impl Answer {
    /// Whether the body carries `key`'s signature.
    pub fn signed_by(&self, key: &telemetry::Key) -> bool {
        self.signature
            .as_deref()
            .is_some_and(|s| telemetry::verify(key, &self.body, s).is_ok())
    }
}

impl Answer {
    /// The body as text (lossy), for errors and logs.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on `stream` and reads the answer; the connection is
/// closed afterwards. `host` is the `Host` header (ops' address).
pub async fn request(
    stream: TcpStream,
    host: &str,
    method: Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<Answer, Error> {
    request_over(stream, None, host, method, path, auth, body, timeout).await
}

/// As [`request`], over TLS first when `tls` is given (the handshake is
/// within `timeout` too).
#[allow(clippy::too_many_arguments)]
pub async fn request_over(
    stream: TcpStream,
    tls: Option<&Tls>,
    host: &str,
    method: Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<Answer, Error> {
    let go = async {
        match tls {
            None => exchange(stream, host, method, path, auth, body).await,
            Some(t) => {
                let s = tokio_rustls::TlsConnector::from(t.config.clone())
                    .connect(t.name.clone(), stream)
                    .await
                    .map_err(Error::Tls)?;
                exchange(s, host, method, path, auth, body).await
            }
        }
    };
    tokio::time::timeout(timeout, go)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

async fn exchange<S>(
    stream: S,
    host: &str,
    method: Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<Bytes>,
) -> Result<Answer, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let body = body.unwrap_or_default();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(body.clone()))
        .map_err(|_| Error::Header("path"))?;
    let h = req.headers_mut();
    h.insert(
        HOST,
        HeaderValue::from_str(host).map_err(|_| Error::Header("host"))?,
    );
    if !body.is_empty() {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    match auth {
        Auth::Signed(key) => {
            let sig = telemetry::sign(key, &body);
            h.insert(
                SIGNATURE_HEADER,
                HeaderValue::from_str(&sig).map_err(|_| Error::Header("signature"))?,
            );
        }
        Auth::Signature(sig) => {
            h.insert(
                SIGNATURE_HEADER,
                HeaderValue::from_str(sig).map_err(|_| Error::Header("signature"))?,
            );
        }
        Auth::Bearer(token) => {
            h.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| Error::Header("authorization"))?,
            );
        }
        Auth::None => {}
    }
    let res = sender.send_request(req).await?;
    let status = res.status();
    let signature = res
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(res.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| Error::Body(e.to_string()))?
        .to_bytes();
    drop(sender);
    driver.abort();
    Ok(Answer {
        status,
        body,
        signature,
    })
}

/// Posts a signed report (a CPE's to `/api/v1/reports`, a HAG's to
/// `/api/v1/hag-reports`), over TLS when `tls` is given.
pub async fn post_report(
    stream: TcpStream,
    tls: Option<&Tls>,
    host: &str,
    path: &str,
    key: &telemetry::Key,
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, Error> {
    request_over(
        stream,
        tls,
        host,
        Method::POST,
        path,
        Auth::Signed(key),
        Some(body),
        timeout,
    )
    .await
}

/// The default reporting period of a CPE or a HAG, seconds.
pub const DEFAULT_PERIOD_S: u64 = 10;

/// The default time one delivery may take, milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;

/// The parts of a sender's `[telemetry]` that the CPE and the HAG share,
/// as written in their configuration.
#[derive(Clone, Copy, Debug)]
pub struct EndpointSpec<'a> {
    /// Ops' API address.
    pub ops: std::net::SocketAddr,
    /// The `Host` header, if not the address (with TLS also the name ops'
    /// certificate must carry, without a port).
    pub host: Option<&'a str>,
    /// The sender's token.
    pub token: &'a str,
    /// Its reporting period, seconds.
    pub period_s: u64,
    /// How long one delivery may take, milliseconds.
    pub timeout_ms: u64,
    /// Whether to speak TLS to ops.
    pub tls: bool,
    /// The CA file ops' certificate is checked against (default: the
    /// system's bundle, [`SYSTEM_CA_BUNDLE`]).
    pub ca: Option<&'a Path>,
    /// The token's kind, for the message: `cpe` or `hag NAME`.
    pub kind: &'a str,
}

/// A sender's `[telemetry]` endpoint, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The `Host` header.
    pub host: String,
    /// The reporting period.
    pub period: Duration,
    /// How long one delivery may take.
    pub timeout: Duration,
    /// TLS, when configured (the CA file is read at check time).
    pub tls: Option<Tls>,
}

/// The spec checked (the CA file read); or the key (under `[telemetry]`)
/// that is wrong, and why.
pub fn check_endpoint(e: &EndpointSpec<'_>) -> Result<Endpoint, (&'static str, String)> {
    if e.ops.port() == 0 || e.ops.ip().is_unspecified() {
        return Err(("ops", "must be ops' address and port".into()));
    }
    let t = e.token;
    if t.len() < 16 || t.len() > 256 || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err((
            "token",
            format!(
                "must be the token `tandem ops token issue --kind {}` printed (16..=256 printable characters)",
                e.kind
            ),
        ));
    }
    let host = e.host.map_or_else(|| e.ops.to_string(), str::to_owned);
    if host.is_empty() || host.len() > 255 || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(("host", "must be a host name".into()));
    }
    if !(1..=3_600).contains(&e.period_s) {
        return Err(("period_s", "must be 1..=3600".into()));
    }
    if !(100..=60_000).contains(&e.timeout_ms) {
        return Err(("timeout_ms", "must be 100..=60000".into()));
    }
    let tls = if e.tls {
        // The certificate's name: `host` without a port, or ops' address.
        let name = match e.host {
            None => e.ops.ip().to_string(),
            Some(h) => match h.parse::<std::net::SocketAddr>() {
                Ok(a) => a.ip().to_string(),
                Err(_) => h
                    .rsplit_once(':')
                    .filter(|(_, p)| p.parse::<u16>().is_ok() && !h.starts_with('['))
                    .map_or(h, |(n, _)| n)
                    .to_owned(),
            },
        };
        let ca = e.ca.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
        Some(Tls::load(ca, &name).map_err(|why| (if e.ca.is_some() { "ca" } else { "tls" }, why))?)
    } else if e.ca.is_some() {
        return Err(("ca", "is for TLS: set tls = true as well".into()));
    } else {
        None
    };
    Ok(Endpoint {
        host,
        period: Duration::from_secs(e.period_s),
        timeout: Duration::from_millis(e.timeout_ms),
        tls,
    })
}

/// What to do with a report after ops answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ops has it (accepted now, or already had it: `409`).
    Delivered,
    /// Ops will never take it (malformed, too old, not in the inventory):
    /// drop it, count it and say why in the log.
    Refused,
    /// Try again later: ops overloaded or failing, or it does not know the
    /// token yet (`401`: a token issued after the CPE started is loaded
    /// within seconds; the bounded queue keeps the reports meanwhile).
    Retry,
}

impl Outcome {
    /// The outcome of an answer's status.
    pub fn of(status: StatusCode) -> Self {
        if status.is_success() || status == StatusCode::CONFLICT {
            Self::Delivered
        } else if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::UNAUTHORIZED
        {
            Self::Retry
        } else {
            Self::Refused
        }
    }
}

/// Reports not sent yet, oldest first, bounded by count and by bytes.
#[derive(Debug)]
pub struct Queue {
    items: VecDeque<Bytes>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
    dropped: u64,
}

impl Queue {
    /// An empty queue holding at most `max_items` reports and `max_bytes`.
    pub fn new(max_items: usize, max_bytes: usize) -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
            max_items: max_items.max(1),
            max_bytes: max_bytes.max(1),
            dropped: 0,
        }
    }

    /// Adds a report at the back, dropping the oldest ones to make room.
    pub fn push(&mut self, report: Bytes) {
        if report.len() > self.max_bytes {
            self.dropped += 1;
            return;
        }
        while self.items.len() >= self.max_items || self.bytes + report.len() > self.max_bytes {
            match self.items.pop_front() {
                Some(old) => {
                    self.bytes -= old.len();
                    self.dropped += 1;
                }
                None => break,
            }
        }
        self.bytes += report.len();
        self.items.push_back(report);
    }

    /// The oldest report, left in place.
    pub fn front(&self) -> Option<&Bytes> {
        self.items.front()
    }

    /// Removes the oldest report (after it was delivered or refused).
    pub fn pop(&mut self) -> Option<Bytes> {
        let r = self.items.pop_front()?;
        self.bytes -= r.len();
        Some(r)
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Reports dropped because the queue was full, since it was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn queue_drops_oldest_by_count() {
        let mut q = Queue::new(3, 1000);
        for i in 0..5u8 {
            q.push(Bytes::from(vec![i]));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.pop().unwrap()[0], 2);
        assert_eq!(q.pop().unwrap()[0], 3);
        assert_eq!(q.pop().unwrap()[0], 4);
        assert!(q.pop().is_none());
    }

    #[test]
    fn queue_drops_oldest_by_bytes() {
        let mut q = Queue::new(100, 100);
        q.push(b(40));
        q.push(b(40));
        q.push(b(40));
        assert_eq!(q.len(), 2);
        assert_eq!(q.dropped(), 1);
        // Larger than the whole queue: dropped, the rest kept.
        q.push(b(101));
        assert_eq!(q.len(), 2);
        assert_eq!(q.dropped(), 2);
        q.pop();
        q.pop();
        assert!(q.is_empty());
        q.push(b(100));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn outcomes() {
        assert_eq!(Outcome::of(StatusCode::NO_CONTENT), Outcome::Delivered);
        assert_eq!(Outcome::of(StatusCode::CONFLICT), Outcome::Delivered);
        assert_eq!(Outcome::of(StatusCode::BAD_REQUEST), Outcome::Refused);
        assert_eq!(Outcome::of(StatusCode::UNAUTHORIZED), Outcome::Retry);
        assert_eq!(Outcome::of(StatusCode::PAYLOAD_TOO_LARGE), Outcome::Refused);
        assert_eq!(Outcome::of(StatusCode::SERVICE_UNAVAILABLE), Outcome::Retry);
        assert_eq!(Outcome::of(StatusCode::TOO_MANY_REQUESTS), Outcome::Retry);
    }
}
