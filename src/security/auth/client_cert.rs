//! Client-certificate identity: a request on a connection whose TLS client certificate
//! was verified is identified by it. The TLS listener only hands the verified certificate
//! over ([`ClientCert`]); what it means as an [`Identity`] is decided here.

use super::Identity;
use crate::security::tls::ClientCert;

/// The identity of a request authenticated by `cert` under `rule`.
pub(super) fn identity(cert: &ClientCert, rule: &str) -> Identity {
    Identity {
        method: "client_cert",
        subject: cert.subject.clone(),
        client_id: Some(cert.subject.clone()),
        scopes: Vec::new(),
        claims: cert.claims.clone(),
        rule: rule.to_string(),
    }
}
