//! JSON Web Key Sets for JWT rules (`jwt.jwks_file`, `jwt.jwks_url`): read or fetched,
//! asymmetric keys only, and kept current: re-read every `jwks_refresh`, and at once (at
//! most every [`FORCED_REFRESH`]) when a token names a `kid` the set does not hold. A
//! failed reload keeps the keys held.

use super::{now_ms, Problems};
use crate::config::JwtConfig;
use arc_swap::ArcSwap;
use jsonwebtoken::DecodingKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where a JWKS comes from.
enum JwksSource {
    File(String),
    Url(String),
}

/// A JSON Web Key Set, kept current.
pub(super) struct Jwks {
    source: JwksSource,
    /// Keys by `kid` (`""` for a key without one). Asymmetric keys only.
    keys: ArcSwap<HashMap<String, DecodingKey>>,
    refresh: Duration,
    last_load: AtomicU64,
    last_forced: AtomicU64,
    loading: AtomicBool,
}

/// The shortest time between two reloads caused by unknown `kid`s.
const FORCED_REFRESH: Duration = Duration::from_secs(5);

impl Jwks {
    /// The set of a JWT rule with exactly one of `jwks_file` (read now) and `jwks_url`
    /// (fetched on first use); problems are named under the rule.
    pub(super) fn build(c: &JwtConfig) -> Result<Jwks, Problems> {
        let mut errs: Problems = Vec::new();
        let (source, keys) = match (&c.jwks_file, &c.jwks_url) {
            (Some(path), None) => match std::fs::read(path)
                .map_err(|e| format!("cannot read {path:?}: {e}"))
                .and_then(|t| Jwks::parse(&t).map_err(|e| format!("{path:?}: {e}")))
            {
                Ok(keys) => (JwksSource::File(path.clone()), keys),
                Err(e) => {
                    errs.push(("jwt.jwks_file".into(), e));
                    (JwksSource::File(path.clone()), HashMap::new())
                }
            },
            (None, Some(url)) => {
                let ok = url.parse::<http::Uri>().ok().is_some_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
                if !ok {
                    errs.push((
                        "jwt.jwks_url".into(),
                        format!("{url:?} is not an http(s) URL"),
                    ));
                }
                // Fetched on first use, then kept current.
                (JwksSource::Url(url.clone()), HashMap::new())
            }
            _ => unreachable!("exactly one JWKS source"),
        };
        if c.jwks_refresh.0 < FORCED_REFRESH {
            errs.push(("jwt.jwks_refresh".into(), "must be at least 5s".into()));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let loaded = if keys.is_empty() { 0 } else { now_ms() };
        Ok(Jwks {
            source,
            keys: ArcSwap::from_pointee(keys),
            refresh: c.jwks_refresh.0,
            last_load: AtomicU64::new(loaded),
            last_forced: AtomicU64::new(0),
            loading: AtomicBool::new(false),
        })
    }

    /// Parse a JWKS document: asymmetric keys only (an `oct` key would let anyone who can
    /// read the set sign tokens).
    fn parse(text: &[u8]) -> Result<HashMap<String, DecodingKey>, String> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
            ) {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(jwk.common.key_id.clone().unwrap_or_default(), key);
            }
        }
        if keys.is_empty() {
            return Err("the JWKS holds no usable RSA, EC or Ed25519 key".into());
        }
        Ok(keys)
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let text = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("reading {path:?}: {e}"))?,
            JwksSource::Url(url) => {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| e.to_string())?;
                let resp = client
                    .get(url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| format!("fetching {url}: {e}"))?;
                resp.bytes()
                    .await
                    .map_err(|e| format!("fetching {url}: {e}"))?
                    .to_vec()
            }
        };
        Self::parse(&text)
    }

    /// Reload now (one reload at a time); false if it failed or another was running.
    async fn reload(&self) -> bool {
        if self.loading.swap(true, Ordering::AcqRel) {
            return false;
        }
        let result = self.fetch().await;
        self.last_load.store(now_ms(), Ordering::Release);
        self.loading.store(false, Ordering::Release);
        match result {
            Ok(keys) => {
                log::info!("JWKS loaded: {} key(s)", keys.len());
                self.keys.store(Arc::new(keys));
                true
            }
            Err(e) => {
                log::warn!("JWKS not reloaded (keeping the keys held): {e}");
                false
            }
        }
    }

    /// The key for `kid`, reloading first if the set is stale or does not hold it.
    pub(super) async fn key(&self, kid: &str) -> Option<DecodingKey> {
        let now = now_ms();
        let stale = now.saturating_sub(self.last_load.load(Ordering::Acquire))
            >= self.refresh.as_millis() as u64
            || self.keys.load().is_empty();
        let held = self.keys.load().get(kid).cloned();
        if held.is_some() && !stale {
            return held;
        }
        let may_force = now.saturating_sub(self.last_forced.load(Ordering::Acquire))
            >= FORCED_REFRESH.as_millis() as u64;
        if stale || may_force {
            if held.is_none() {
                self.last_forced.store(now, Ordering::Release);
            }
            self.reload().await;
        }
        self.keys.load().get(kid).cloned().or(held)
    }
}
