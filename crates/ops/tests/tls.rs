//! Ops' API over TLS: `tandem ops tls-init`'s CA and certificate, a CPE's
//! signed report and an operator's call over TLS, and every way a client
//! that should not get through does not (plain HTTP, another CA, another
//! name, a handshake that never comes).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{now_ms, Cpe};
use ops::config::Config;
use ops::service::Server;
use ops::store::{Store, TokenKind};
use ops_client::{Auth, Method, StatusCode, Tls};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

struct Running {
    api: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path, tls_dir: &Path) -> Running {
    std::fs::write(
        dir.join("homes.csv"),
        "subscriber,cabinet,card,cell\nh0,cab0,0,c1\n",
    )
    .unwrap();
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\nheader_timeout_ms = 500\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\n\
         [admin]\nlisten = \"127.0.0.2:0\"\n\
         [data]\ndb = \"ops.db\"\ninventory = \"homes.csv\"\n",
        tls_dir.join("ops.pem").display(),
        tls_dir.join("ops.key").display()
    );
    std::fs::write(dir.join("ops.toml"), text).unwrap();
    let server = Server::bind(Config::load(&dir.join("ops.toml")).unwrap())
        .await
        .unwrap();
    let api = server.api_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    Running { api, stop, task }
}

async fn call(
    api: SocketAddr,
    tls: Option<&Tls>,
    method: Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<Bytes>,
) -> Result<ops_client::Answer, ops_client::Error> {
    let stream = tokio::net::TcpStream::connect(api).await.unwrap();
    ops_client::request_over(
        stream,
        tls,
        &api.to_string(),
        method,
        path,
        auth,
        body,
        Duration::from_secs(5),
    )
    .await
}

/// The operator's `GET /api/v1/homes/h0`, over `tls` if given.
async fn home(
    api: SocketAddr,
    tls: Option<&Tls>,
    auth: Auth<'_>,
) -> Result<ops_client::Answer, ops_client::Error> {
    call(api, tls, Method::GET, "/api/v1/homes/h0", auth, None).await
}

#[tokio::test]
async fn reports_and_operators_over_tls_and_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("tls");
    let names = vec!["127.0.0.1".to_owned(), "ops.example.net".to_owned()];
    let f = ops::tls::init(&pki, &names, 30).unwrap();
    assert!(f.new_ca);
    // The keys are the owner's alone.
    use std::os::unix::fs::PermissionsExt as _;
    for k in [&f.ca_key, &f.key] {
        let mode = std::fs::metadata(k).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{}: {mode:o}", k.display());
    }
    let store = Store::open(&dir.path().join("ops.db")).unwrap();
    let cpe_key = telemetry::key(
        store
            .issue_token(TokenKind::Cpe, "h0", now_ms())
            .unwrap()
            .as_bytes(),
    );
    let operator = store
        .issue_token(TokenKind::Operator, "noc", now_ms())
        .unwrap();
    drop(store);
    let ops = start(dir.path(), &pki).await;
    let tls = Tls::load(&f.ca_cert, "127.0.0.1").unwrap();

    // A signed report over TLS: accepted, and the policy comes back signed.
    let body = Bytes::from(Cpe::new(0).report(now_ms()).to_json());
    let stream = tokio::net::TcpStream::connect(ops.api).await.unwrap();
    let a = ops_client::post_report(
        stream,
        Some(&tls),
        &ops.api.to_string(),
        "/api/v1/reports",
        &cpe_key,
        body.clone(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.signed_by(&cpe_key));
    // The operator too, and by the certificate's DNS name.
    let by_name = Tls::load(&f.ca_cert, "ops.example.net").unwrap();
    let a = home(ops.api, Some(&by_name), Auth::Bearer(&operator))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());

    // Plain HTTP on the TLS port gets no answer.
    let plain = home(ops.api, None, Auth::Bearer(&operator)).await;
    assert!(plain.is_err(), "{plain:?}");
    // A CA that did not sign ops' certificate: refused in the handshake.
    let other = ops::tls::init(&dir.path().join("other"), &names, 30).unwrap();
    let stranger = Tls::load(&other.ca_cert, "127.0.0.1").unwrap();
    let e = home(ops.api, Some(&stranger), Auth::None)
        .await
        .unwrap_err();
    assert!(matches!(e, ops_client::Error::Tls(_)), "{e}");
    // The right CA, a name the certificate is not for.
    let wrong = Tls::load(&f.ca_cert, "ops.other.net").unwrap();
    let e = home(ops.api, Some(&wrong), Auth::None).await.unwrap_err();
    assert!(matches!(e, ops_client::Error::Tls(_)), "{e}");

    // A client that connects and never starts its handshake is closed
    // within the header timeout (500 ms here).
    let mut idle = tokio::net::TcpStream::connect(ops.api).await.unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Garbage instead of a ClientHello: closed, and ops still serves.
    let mut junk = tokio::net::TcpStream::connect(ops.api).await.unwrap();
    junk.write_all(b"\x16\x03\x01\xff\xffnot a hello at all")
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), junk.read(&mut buf)).await;
    let a = home(ops.api, Some(&tls), Auth::Bearer(&operator))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);

    // Run again: the CA stays, ops gets a fresh certificate that the
    // fleet's CA file still verifies.
    let again = ops::tls::init(&pki, &names, 30).unwrap();
    assert!(!again.new_ca);
    let _ = ops.stop.send(());
    ops.task.await.unwrap();
    let ops = start(dir.path(), &pki).await;
    let a = home(ops.api, Some(&tls), Auth::Bearer(&operator))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    let _ = ops.stop.send(());
    ops.task.await.unwrap();
}

#[test]
fn broken_tls_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("junk.pem"), "not a certificate\n").unwrap();
    let e = Tls::load(&p.join("junk.pem"), "127.0.0.1").unwrap_err();
    assert!(
        e.contains("junk.pem") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = Tls::load(&p.join("missing.pem"), "127.0.0.1").unwrap_err();
    assert!(e.contains("missing.pem"), "{e}");
    let f = ops::tls::init(&p.join("tls"), &["ops.example.net".into()], 30).unwrap();
    let e = Tls::load(&f.ca_cert, "not a name!").unwrap_err();
    assert!(e.contains("not a DNS name"), "{e}");
    // The server's side: a key that is not the certificate's.
    let other = ops::tls::init(&p.join("other"), &["ops.example.net".into()], 30).unwrap();
    let e = admin::tls::server_config(&f.cert, &other.key).unwrap_err();
    assert!(e.contains("does not fit"), "{e}");
    let e = admin::tls::server_config(&p.join("junk.pem"), &f.key).unwrap_err();
    assert!(e.contains("junk.pem"), "{e}");
    // tls-init's own checks.
    assert!(ops::tls::init(&p.join("x"), &[], 30).is_err());
    assert!(ops::tls::init(&p.join("x"), &["ok.net".into()], 0).is_err());
    assert!(ops::tls::init(&p.join("x"), &["bad name".into()], 30).is_err());
}

#[test]
fn a_senders_tls_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let f = ops::tls::init(dir.path(), &["ops.example.net".into()], 30).unwrap();
    fn spec<'a>(
        tls: bool,
        ca: Option<&'a Path>,
        host: Option<&'a str>,
    ) -> ops_client::EndpointSpec<'a> {
        ops_client::EndpointSpec {
            ops: "192.0.2.80:8470".parse().unwrap(),
            host,
            token: "0123456789abcdef0123",
            period_s: 10,
            timeout_ms: 3000,
            tls,
            ca,
            kind: "cpe",
        }
    }
    let e = ops_client::check_endpoint(&spec(true, Some(&f.ca_cert), Some("ops.example.net:8470")))
        .unwrap();
    assert!(e.tls.is_some());
    assert_eq!(e.host, "ops.example.net:8470");
    assert!(ops_client::check_endpoint(&spec(false, None, None))
        .unwrap()
        .tls
        .is_none());
    let (key, why) = ops_client::check_endpoint(&spec(false, Some(&f.ca_cert), None)).unwrap_err();
    assert_eq!(key, "ca", "{why}");
    let missing = dir.path().join("nope.pem");
    let (key, why) = ops_client::check_endpoint(&spec(true, Some(&missing), None)).unwrap_err();
    assert_eq!(key, "ca");
    assert!(why.contains("nope.pem"), "{why}");
}
