//! API keys (`api_keys`): a header carrying a key of which only the SHA-256 is
//! configured; the presented key's hash is compared with every configured one in
//! constant time.

use super::identity::{Failure, Grant};
use super::{Identity, Problems};
use crate::config::ApiKeysConfig;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub(super) struct ApiKeys {
    /// The header that carries the key (never forwarded upstream).
    pub(super) header: http::HeaderName,
    keys: Vec<([u8; 32], Grant)>,
}

/// The API-key side of a rule; problems are named under the rule.
pub(super) fn build(c: &ApiKeysConfig) -> Result<ApiKeys, Problems> {
    let mut errs: Problems = Vec::new();
    let header = http::HeaderName::from_bytes(c.header.as_bytes())
        .map_err(|_| {
            errs.push((
                "api_keys.header".into(),
                format!("{:?} is not a header name", c.header),
            ))
        })
        .ok();
    if header
        .as_ref()
        .is_some_and(|h| h == http::header::AUTHORIZATION)
    {
        errs.push((
            "api_keys.header".into(),
            "Authorization carries JWTs and Basic credentials; use another header".into(),
        ));
    }
    if c.keys.is_empty() {
        errs.push((
            "api_keys.keys".into(),
            "at least one key is required".into(),
        ));
    }
    let mut keys = Vec::new();
    for (j, k) in c.keys.iter().enumerate() {
        if k.id.is_empty() {
            errs.push((format!("api_keys.keys[{j}].id"), "is required".into()));
        }
        let mut hash = [0u8; 32];
        let hex = k.sha256.trim().to_ascii_lowercase();
        let ok = hex.len() == 64
            && (0..32).all(|b| {
                u8::from_str_radix(&hex[2 * b..2 * b + 2], 16)
                    .map(|v| hash[b] = v)
                    .is_ok()
            });
        if !ok {
            errs.push((
                format!("api_keys.keys[{j}].sha256"),
                "must be 64 hex digits: the SHA-256 of the key (`printf %s KEY | sha256sum`)"
                    .into(),
            ));
        }
        keys.push((hash, Grant::new(&k.id, &k.scopes, &k.claims)));
    }
    match header {
        Some(header) if errs.is_empty() => Ok(ApiKeys { header, keys }),
        _ => Err(errs),
    }
}

impl ApiKeys {
    /// Check a key `presented` to the rule named `rule`.
    pub(super) fn check(&self, rule: &str, presented: &[u8]) -> Result<Identity, Failure> {
        let hash: [u8; 32] = Sha256::digest(presented).into();
        // Compare with every key, whatever matches, so timing says nothing about which.
        let mut found = None;
        for (i, (h, _)) in self.keys.iter().enumerate() {
            if bool::from(h.ct_eq(&hash)) {
                found = Some(i);
            }
        }
        let (_, grant) = found.and_then(|i| self.keys.get(i)).ok_or_else(|| {
            Failure::refused("bad_api_key", format!("unknown API key in {}", self.header))
        })?;
        Ok(grant.identity("api_key", Some(grant.id.clone()), rule))
    }
}
