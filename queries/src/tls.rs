//! Connecting to PostgreSQL the way libpq users expect: `sslmode` and `sslrootcert` in the
//! URL (or `PGSSLMODE` / `PGSSLROOTCERT`), with TLS by rustls.
//!
//! | `sslmode`     | TLS                     | certificate checked                          |
//! |---------------|-------------------------|----------------------------------------------|
//! | `disable`     | never                   | –                                            |
//! | `prefer` (default) | if the server offers it | no (as libpq)                      |
//! | `require`     | always                  | no (as libpq), unless `sslrootcert` is given |
//! | `verify-ca`   | always                  | chain to a trusted root                      |
//! | `verify-full` | always                  | chain, and the host name in the URL          |
//!
//! Trusted roots: the PEM file `sslrootcert` names (else `~/.postgresql/root.crt` if it
//! exists, as libpq); `sslrootcert=system`, or neither, means the operating system's store.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{Client, Config, NoTls};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => bail!("sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"),
        })
    }
}

/// A parsed `postgres://` target: the driver's configuration plus our TLS choices.
#[derive(Debug)]
pub struct Target {
    pub config: Config,
    pub mode: SslMode,
    /// Trusted roots for verify-ca / verify-full.
    pub roots: Roots,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// A PEM file (`sslrootcert=FILE`, or `~/.postgresql/root.crt` as libpq).
    File(PathBuf),
    /// The operating system's store (`sslrootcert=system`, or nothing given).
    System,
}

/// Parses a `postgres://` URL; `sslmode`/`sslrootcert` come from the URL, else from
/// `PGSSLMODE`/`PGSSLROOTCERT`.
pub fn parse(url: &str) -> Result<Target> {
    parse_with_env(url, |k| std::env::var(k).ok())
}

pub fn parse_with_env(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Target> {
    let mut u = url::Url::parse(url).map_err(|e| anyhow!("not a postgres:// URL: {e}"))?;
    let mut mode = None;
    let mut root = None;
    let mut rest: Vec<(String, String)> = Vec::new();
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "sslmode" => mode = Some(v.into_owned()),
            "sslrootcert" => root = Some(v.into_owned()),
            "sslcert" | "sslkey" | "sslcrl" => bail!("{k} (client certificates, CRLs) is not supported"),
            _ => rest.push((k.into_owned(), v.into_owned())),
        }
    }
    if rest.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(rest);
    }
    let mode: SslMode = match mode.or_else(|| env("PGSSLMODE")) {
        Some(m) => m.parse()?,
        None => SslMode::Prefer,
    };
    let root = root.or_else(|| env("PGSSLROOTCERT"));
    let mut config = Config::from_str(u.as_str()).map_err(|e| anyhow!("{e}"))?;
    config.ssl_mode(match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    });
    // libpq: with a root certificate given, `require` verifies the chain as verify-ca.
    let mode = if mode == SslMode::Require && root.is_some() { SslMode::VerifyCa } else { mode };
    let roots = match root.as_deref() {
        Some("system") => Roots::System,
        Some(path) => Roots::File(PathBuf::from(path)),
        None => match env("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt")).filter(|p| p.is_file()) {
            Some(p) => Roots::File(p),
            None => Roots::System,
        },
    };
    Ok(Target { config, mode, roots })
}

/// Connects and spawns the connection task; the handle ends when the client is dropped.
pub async fn connect(target: &Target) -> Result<(Client, tokio::task::JoinHandle<()>)> {
    if target.mode == SslMode::Disable {
        let (client, conn) = target.config.connect(NoTls).await?;
        return Ok((client, tokio::spawn(async move { let _ = conn.await; })));
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(target)?);
    let (client, conn) = target.config.connect(tls).await?;
    Ok((client, tokio::spawn(async move { let _ = conn.await; })))
}

fn client_config(target: &Target) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = match target.mode {
        SslMode::VerifyCa | SslMode::VerifyFull => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(target)?), provider.clone())
                .build()
                .context("building the certificate verifier")?,
        ),
        _ => None,
    };
    let verifier = Verifier { webpki, check_name: target.mode == SslMode::VerifyFull, provider: provider.clone() };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

fn roots(target: &Target) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    if let Roots::File(path) = &target.roots {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow!("sslrootcert {}: {e}", path.display()))?;
        if certs.is_empty() {
            bail!("sslrootcert {}: no PEM certificate in it", path.display());
        }
        for c in certs {
            store.add(c).map_err(|e| anyhow!("sslrootcert {}: {e}", path.display()))?;
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        for c in found.certs {
            let _ = store.add(c);
        }
        if store.is_empty() {
            bail!("sslmode verify-ca/verify-full: no trusted roots in the system store; give sslrootcert=FILE");
        }
    }
    Ok(store)
}

#[derive(Debug)]
struct Verifier {
    /// `None`: encrypt only (libpq's `require`): any certificate, but the handshake is
    /// still verified. `Some`: the chain to a trusted root (`verify-ca`) …
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// … and the host name (`verify-full`).
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else { return Ok(ServerCertVerified::assertion()) };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }))
                if !self.check_name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn ssl_parameters_are_ours_and_the_rest_is_the_drivers() {
        let t = parse_with_env("postgres://u:p@db.example:6543/bi?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=ct", env).unwrap();
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.roots, Roots::File("/etc/ca.pem".into()));
        assert_eq!(t.config.get_dbname(), Some("bi"));
        assert_eq!(t.config.get_application_name(), Some("ct"));
        assert_eq!(t.config.get_ssl_mode(), PgSslMode::Require);

        let t = parse_with_env("postgres://u@h/db", env).unwrap();
        assert_eq!(t.mode, SslMode::Prefer);
        assert_eq!(t.roots, Roots::System);

        let t = parse_with_env("postgres://u@h/db", |k| (k == "PGSSLMODE").then(|| "disable".to_string())).unwrap();
        assert_eq!(t.mode, SslMode::Disable);
        assert_eq!(t.config.get_ssl_mode(), PgSslMode::Disable);

        // libpq: require with a root certificate verifies the chain.
        let t = parse_with_env("postgres://u@h/db?sslmode=require&sslrootcert=/ca.pem", env).unwrap();
        assert_eq!(t.mode, SslMode::VerifyCa);
    }

    #[test]
    fn bad_ssl_parameters_are_named() {
        let e = parse_with_env("postgres://u@h/db?sslmode=strict", env).unwrap_err().to_string();
        assert!(e.contains("sslmode \"strict\""), "{e}");
        let e = parse_with_env("postgres://u@h/db?sslcert=/c.pem", env).unwrap_err().to_string();
        assert!(e.contains("sslcert"), "{e}");
    }
}
