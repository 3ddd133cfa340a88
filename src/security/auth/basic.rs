//! Basic passwords (`basic`): argon2 or bcrypt hashes, verified on a blocking thread
//! (they are slow on purpose and must not stall the proxy's workers), a bounded number
//! at once ([`super::throttle`]); a credential that verified is remembered briefly by a
//! keyed hash, and an unknown user costs as long as a known one.

use super::identity::{Failure, Grant};
use super::throttle::Attempt;
use super::{now_ms, Identity, Problems};
use crate::config::BasicConfig;
use crate::telemetry::metrics::{self, METRICS};
use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub(super) struct Basic {
    /// Each user's password hash and grant.
    users: Vec<(String, Grant)>,
    /// Each user's last verified credential, by index into `users`.
    verified: Vec<ArcSwapOption<Verified>>,
}

/// A credential that verified: its keyed hash ([`super::throttle::AuthThrottle::tag`])
/// and until when (ms, [`now_ms`]) it is trusted without hashing again.
struct Verified {
    tag: [u8; 32],
    until: u64,
}

/// The Basic side of a rule; problems are named under the rule.
pub(super) fn build(c: &BasicConfig) -> Result<Basic, Problems> {
    let mut errs: Problems = Vec::new();
    if c.users.is_empty() {
        errs.push(("basic.users".into(), "at least one user is required".into()));
    }
    for (j, u) in c.users.iter().enumerate() {
        if u.name.is_empty() || u.name.contains(':') {
            errs.push((
                format!("basic.users[{j}].name"),
                "is required and may not contain ':'".into(),
            ));
        }
        let h = &u.hash;
        let known = if h.starts_with("$argon2") {
            argon2::PasswordHash::new(h).is_ok()
        } else if h.starts_with("$2") {
            h.parse::<bcrypt::HashParts>().is_ok()
        } else {
            false
        };
        if !known {
            errs.push((
                format!("basic.users[{j}].hash"),
                "must be an argon2 ($argon2id$...) or bcrypt ($2b$...) hash, never a password"
                    .into(),
            ));
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Basic {
        verified: c.users.iter().map(|_| ArcSwapOption::empty()).collect(),
        users: c
            .users
            .iter()
            .map(|u| (u.hash.clone(), Grant::new(&u.name, &u.scopes, &u.claims)))
            .collect(),
    })
}

impl Basic {
    /// Check `Authorization: Basic` credentials (`b64`) presented to the rule named
    /// `rule`, unless the client IP or the user name is locked out or no verification
    /// slot is free.
    pub(super) async fn check(
        &self,
        rule: &str,
        b64: &[u8],
        at: &Attempt<'_>,
    ) -> Result<Identity, Failure> {
        let bad = || Failure::refused("bad_password", "wrong user name or password");
        let throttle = at.throttle;
        let (decoded, user, password) = match decode_basic(b64) {
            Some(parts) => parts,
            None => {
                // Malformed credentials: a failure of the address (there is no user).
                throttle.check(at.ip, None).map_err(Failure::Throttled)?;
                throttle.failed(at.ip, None);
                return Err(bad());
            }
        };
        let who = Some((rule, user.as_str()));
        throttle.check(at.ip, who).map_err(Failure::Throttled)?;
        let known = self.users.iter().position(|(_, g)| g.id == user);
        // A credential that verified a moment ago: no hash again.
        let tag = throttle.tag(rule, &decoded);
        if let Some(i) = known {
            let now = now_ms();
            let cached = self.verified[i].load();
            if cached
                .as_ref()
                .is_some_and(|v| now < v.until && bool::from(v.tag.ct_eq(&tag)))
            {
                return Ok(self.identity(i, rule));
            }
        }
        // An unknown user is checked against another user's hash and refused anyway, so
        // the answer takes as long as for a known one (no user enumeration by timing).
        let (hash, _) = self.users[known.unwrap_or(0)].clone();
        let permit = throttle.permit().map_err(Failure::Throttled)?;
        // Slow on purpose: off the proxy's worker threads, holding the slot until done.
        let ok = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            verify(&hash, &password)
        })
        .await
        .unwrap_or(false);
        let ok = ok && known.is_some();
        let result = if ok { "ok" } else { "failed" };
        metrics::counter(&METRICS.password_verifications, &[result]).inc();
        let Some(i) = known.filter(|_| ok) else {
            throttle.failed(at.ip, who);
            return Err(bad());
        };
        log::debug!("auth: password of {user:?} verified (rule {rule})");
        if throttle.cache_ttl_ms() > 0 {
            self.verified[i].store(Some(Arc::new(Verified {
                tag,
                until: now_ms().saturating_add(throttle.cache_ttl_ms()),
            })));
        }
        Ok(self.identity(i, rule))
    }

    fn identity(&self, user: usize, rule: &str) -> Identity {
        self.users[user].1.identity("basic", None, rule)
    }
}

/// Does `password` match `hash` (argon2 or bcrypt)? Slow on purpose.
fn verify(hash: &str, password: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::PasswordVerifier;
        argon2::PasswordHash::new(hash)
            .map(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
}

/// `Authorization: Basic` credentials: the decoded `user:password`, the user, the password.
fn decode_basic(b64: &[u8]) -> Option<(Vec<u8>, String, String)> {
    let decoded = STANDARD.decode(b64.trim_ascii()).ok()?;
    let text = std::str::from_utf8(&decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    let (user, password) = (user.to_string(), password.to_string());
    Some((decoded, user, password))
}
