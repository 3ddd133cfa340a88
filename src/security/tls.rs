//! TLS termination on the client listener (rustls, through Pingora) and client
//! certificates.
//!
//! [`ListenerTls::load`] reads `server.tls` once: the certificate chain and its key (rustls
//! checks that they match), and the client CAs. It runs when the config is validated and
//! again when the listener is built, so a process started with `-u` serves whatever the
//! files hold then. The listener offers `h2` and `http/1.1` by ALPN.
//!
//! With `client_ca`, rustls' WebPKI verifier checks a presented certificate's chain (and
//! with `client_auth: required`, the handshake fails without one). Once a handshake is
//! complete, the leaf certificate is read with `x509-parser` into a [`ClientCert`], which
//! Pingora keeps in the connection's TLS digest ([`SslDigestExtension`]); the request path
//! finds it there with [`peer_cert`]. This module only hands the verified certificate
//! over: an auth rule with `client_cert: true` turns it into the request's identity (in
//! `auth`, which depends on this module and never the reverse).
//!
//! [`SslDigestExtension`]: pingora::protocols::tls::SslDigestExtension

use crate::config::{ClientAuth, ListenerTlsConfig};
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{
    ClientCertVerifier, ClientHello, CryptoProvider, ResolvesServerCert, RootCertStore,
    WebPkiClientVerifier,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::any::Any;
use std::sync::Arc;

/// The listener's TLS material, loaded and checked.
pub struct ListenerTls {
    key: Arc<CertifiedKey>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The `Strict-Transport-Security` value (none with `hsts_max_age: 0`).
    pub hsts: Option<http::HeaderValue>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ListenerTls")
            .field("client_certificates", &self.verifier.is_some())
            .finish()
    }
}

type Problems = Vec<(String, String)>;

impl ListenerTls {
    /// Read and check `server.tls`; every problem comes back as `(path, message)`.
    pub fn load(c: &ListenerTlsConfig) -> Result<ListenerTls, Problems> {
        let at = |k: &str| format!("server.tls.{k}");
        let mut errs: Problems = Vec::new();
        pingora::tls::install_default_crypto_provider();
        let provider = CryptoProvider::get_default()
            .cloned()
            .ok_or_else(|| vec![(at("cert"), "no TLS crypto provider".to_string())])?;

        let chain = required(&c.cert, "cert", &mut errs)
            .and_then(|p| read_certs(p).map_err(|e| errs.push((at("cert"), e))).ok());
        let key = required(&c.key, "key", &mut errs).and_then(|p| {
            PrivateKeyDer::from_pem_file(p)
                .map_err(|e| errs.push((at("key"), format!("no PEM private key in {p:?}: {e}"))))
                .ok()
        });
        let key = match (chain, key) {
            (Some(chain), Some(key)) => CertifiedKey::from_der(chain, key, &provider)
                .map_err(|e| {
                    errs.push((
                        at("key"),
                        format!(
                            "is not the private key of the first certificate in {:?} ({e})",
                            c.cert
                        ),
                    ))
                })
                .ok(),
            _ => None,
        };

        let verifier = match (&c.client_ca, c.client_auth) {
            (Some(ca), mode) => client_verifier(ca, mode.unwrap_or(ClientAuth::Required), provider)
                .map_err(|e| errs.push((at("client_ca"), e)))
                .ok(),
            (None, Some(_)) => {
                errs.push((
                    at("client_auth"),
                    "needs client_ca: the CAs that issue client certificates".into(),
                ));
                None
            }
            (None, None) => None,
        };
        let hsts = hsts(c);
        match key {
            Some(key) if errs.is_empty() => Ok(ListenerTls {
                key: Arc::new(key),
                verifier,
                hsts,
            }),
            _ => Err(errs),
        }
    }

    /// Pingora's listener settings: this certificate, h2 and http/1.1 by ALPN, and the
    /// client-certificate verifier when there is one.
    pub fn settings(&self) -> Result<TlsSettings, String> {
        let mut settings = match &self.verifier {
            Some(_) => TlsSettings::with_callbacks(Box::new(ReadPeerCertificate)),
            // The files were read already: the resolver below replaces these paths.
            None => TlsSettings::intermediate("", ""),
        }
        .map_err(|e| format!("server.tls: {e}"))?;
        settings.set_cert_resolver(Arc::new(OneCertificate(self.key.clone())));
        if let Some(verifier) = &self.verifier {
            settings.set_client_cert_verifier(verifier.clone());
        }
        settings.enable_h2();
        Ok(settings)
    }
}

/// The `Strict-Transport-Security` value of a TLS listener (none with `hsts_max_age: 0`).
pub fn hsts(c: &ListenerTlsConfig) -> Option<http::HeaderValue> {
    let max_age = c.hsts_max_age.0.as_secs();
    (max_age > 0)
        .then(|| http::HeaderValue::from_str(&format!("max-age={max_age}")).expect("ASCII digits"))
}

fn required<'a>(path: &'a str, key: &str, errs: &mut Problems) -> Option<&'a str> {
    if path.is_empty() {
        errs.push((
            format!("server.tls.{key}"),
            "is required (a PEM file)".into(),
        ));
        None
    } else {
        Some(path)
    }
}

/// Every certificate of a PEM file (at least one).
fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read PEM certificates from {path:?}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {path:?}"));
    }
    Ok(certs)
}

fn client_verifier(
    ca: &str,
    mode: ClientAuth,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("a certificate in {ca:?} is not a usable CA: {e}"))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match mode {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required => builder,
    };
    builder
        .build()
        .map_err(|e| format!("cannot verify client certificates with {ca:?}: {e}"))
}

/// The one server certificate, whatever the client asks for.
#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Reads the verified client certificate once per connection, after the handshake.
struct ReadPeerCertificate;

#[async_trait]
impl TlsAccept for ReadPeerCertificate {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let der = tls.peer_certificate_der()?;
        match ClientCert::parse(der) {
            Ok(cert) => Some(Arc::new(cert)),
            Err(e) => {
                log::warn!("a verified client certificate could not be read: {e}");
                None
            }
        }
    }
}

/// A client certificate verified during the handshake, as the request path sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCert {
    /// The subject's Common Name; without one, the first URI, DNS or e-mail
    /// subject alternative name; without any, `sha256:<fingerprint>`.
    pub subject: String,
    /// `subject_dn`, `issuer_dn`, `serial`, `sha256` and the SANs (`dns_names`, `uris`,
    /// `emails`), for logs and policies.
    pub claims: Arc<Map<String, Value>>,
}

impl ClientCert {
    /// Read a DER certificate (already verified: nothing here is a security decision).
    pub fn parse(der: &[u8]) -> Result<ClientCert, String> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let cn = cert
            .subject()
            .iter_common_name()
            .find_map(|a| a.as_str().ok())
            .map(str::to_string);
        let (mut dns, mut uris, mut emails) = (Vec::new(), Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns.push(n.to_string()),
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    GeneralName::RFC822Name(e) => emails.push(e.to_string()),
                    _ => {}
                }
            }
        }
        let fingerprint: String = Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let subject = cn
            .filter(|cn| !cn.is_empty())
            .or_else(|| uris.first().or(dns.first()).or(emails.first()).cloned())
            .unwrap_or_else(|| format!("sha256:{fingerprint}"));
        let mut claims = Map::new();
        claims.insert("subject_dn".into(), cert.subject().to_string().into());
        claims.insert("issuer_dn".into(), cert.issuer().to_string().into());
        claims.insert("serial".into(), cert.raw_serial_as_string().into());
        claims.insert("sha256".into(), fingerprint.into());
        claims.insert("dns_names".into(), dns.into());
        claims.insert("uris".into(), uris.into());
        claims.insert("emails".into(), emails.into());
        Ok(ClientCert {
            subject,
            claims: Arc::new(claims),
        })
    }
}

/// The verified client certificate of the connection a request arrived on.
pub fn peer_cert(session: &pingora::proxy::Session) -> Option<&ClientCert> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<ClientCert>()
}

/// Is the request's connection TLS?
pub fn is_tls(session: &pingora::proxy::Session) -> bool {
    session
        .digest()
        .is_some_and(|d| d.ssl_digest.as_ref().is_some())
}
