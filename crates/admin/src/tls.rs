//! TLS for Tandem's HTTP endpoints and their clients: one crypto provider
//! for the whole workspace, and a server's certificate chain and key read
//! from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto every TLS endpoint and client of Tandem uses.
///
/// ring, not aws-lc-rs: it builds for the home gateways' MIPS and ARM
/// targets with nothing but a C compiler. Its cost, the reason rustls
/// marks it deprecated: no post-quantum key exchange yet.
///
/// Key exchange: X25519 first, then P-256 and P-384. ring's own default
/// puts P-384 first, which costs about 1.4 ms of CPU per handshake on this
/// machine against 0.1 ms for X25519: with it, TLS took ops' ingest from
/// 7,162 to 708 reports/s (`tandem ops bench-ingest`, the `ops-tls` row).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    #[allow(deprecated)]
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    Arc::new(p)
}

/// The certificates of the PEM text `pem`, read from `path` (named in the
/// error): at least one, all well-formed.
pub fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A server's TLS: the certificate chain in `cert` (PEM, leaf first) and
/// its private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1), checked to
/// belong together. The error names the file and what is wrong with it.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let chain = certificates(cert, &read(cert)?)?;
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: no PEM private key: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "{} and {}: the key does not fit the certificate, or is unusable: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless session tickets (keys rotated every 6 h): a CPE that
    // reports every 10 s on a new connection resumes its session instead
    // of a full handshake, however many CPEs there are.
    #[allow(deprecated)]
    {
        config.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS tickets: {e}"))?;
    }
    Ok(Arc::new(config))
}

/// [`server_config`] as an acceptor.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    server_config(cert, key).map(tokio_rustls::TlsAcceptor::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn x25519_is_offered_first() {
        let p = super::provider();
        assert_eq!(p.kx_groups[0].name(), rustls::NamedGroup::X25519);
        assert_eq!(p.kx_groups.len(), 3);
    }
}
