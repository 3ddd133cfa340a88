//! Throttling of failed authentication (`security.auth_throttle`): credential guessing
//! and the CPU and memory a password hash costs.
//!
//! * **Lockout.** Failed attempts are counted per client IP and, for Basic, per user name
//!   (the name as sent, known or not, so a lockout says nothing about which users
//!   exist), over a sliding `window` ([`crate::security::window::Windows`]). Once either holds
//!   `max_failures`, attempts are refused with 429 and a `Retry-After` **before** any
//!   credential is checked — a correct one included, so guessing stops being useful.
//!   Only presented credentials that fail count: a request without any (a client
//!   discovering the challenge) never does, nor does a refused one.
//! * **Bounded hashing.** At most `max_concurrent_verifications` password hashes run at
//!   once; a Basic request finding no free slot gets 503 at once instead of queueing on
//!   the blocking pool (each argon2 hash holds its memory cost while it runs). A slot is
//!   held until its hash finishes, even if the client has left.
//! * **Verified-credential cache.** A Basic credential that verified is remembered for
//!   `cache_ttl` as an HMAC-SHA-256 of the credential under a random key made when the
//!   process starts (never the password itself), compared in constant time; its next
//!   requests skip the hash. A reload rebuilds the rules and forgets the cache.

use crate::config::AuthThrottleConfig;
use crate::security::window::{self, Windows};
use hmac::{Hmac, Mac};
use once_cell::sync::Lazy;
use sha2::Sha256;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The key of the verified-credential cache's hashes: random, one per process.
static CACHE_KEY: Lazy<[u8; 32]> = Lazy::new(rand::random);

/// Where an attempt comes from, and the throttle that counts its failures.
pub(super) struct Attempt<'a> {
    pub(super) throttle: &'a AuthThrottle,
    pub(super) ip: Option<IpAddr>,
}

/// Why an attempt was refused without checking its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Throttled {
    /// Too many failures: `by` is `client_ip` or `user` (a metric label).
    Locked {
        by: &'static str,
        limit: u32,
        retry_after: u64,
    },
    /// Every password-verification slot is in use.
    Busy { slots: usize },
}

impl Throttled {
    /// The reason label (`client_ip`, `user`, `busy`).
    pub fn reason(&self) -> &'static str {
        match self {
            Throttled::Locked { by, .. } => by,
            Throttled::Busy { .. } => "busy",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Throttled::Locked {
                by,
                limit,
                retry_after,
            } => {
                let whom = if *by == "user" {
                    "for this user name"
                } else {
                    "from this client address"
                };
                format!(
                    "too many failed authentication attempts {whom} ({limit} within \
                     security.auth_throttle.window); no credential is checked until then: \
                     retry in {retry_after} s"
                )
            }
            Throttled::Busy { slots } => format!(
                "all {slots} password verification slots are busy \
                 (security.auth_throttle.max_concurrent_verifications); retry in a moment"
            ),
        }
    }
}

/// The lockout counters, the verification slots and the cache's settings.
pub struct AuthThrottle {
    max_failures: u32,
    failures: Windows,
    verifications: Arc<Semaphore>,
    slots: usize,
    cache_ttl_ms: u64,
}

impl std::fmt::Debug for AuthThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthThrottle")
            .field("max_failures", &self.max_failures)
            .field("slots", &self.slots)
            .finish()
    }
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle::build(&AuthThrottleConfig::default())
    }
}

/// What failures are counted under.
#[derive(Hash)]
enum Key<'a> {
    Ip(Option<IpAddr>),
    /// A Basic user name under a rule.
    User(&'a str, &'a str),
}

impl AuthThrottle {
    pub fn build(cfg: &AuthThrottleConfig) -> AuthThrottle {
        let slots = match cfg.max_concurrent_verifications {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n as usize,
        };
        AuthThrottle {
            max_failures: cfg.max_failures,
            failures: Windows::new(cfg.window.0, cfg.max_tracked_keys as usize),
            verifications: Arc::new(Semaphore::new(slots)),
            slots,
            cache_ttl_ms: cfg.cache_ttl.0.as_millis() as u64,
        }
    }

    /// Refuse the attempt if its client IP or (`user`: rule, name) is locked out.
    pub fn check(&self, ip: Option<IpAddr>, user: Option<(&str, &str)>) -> Result<(), Throttled> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let now = window::now_ms();
        let keys = [
            Some(("client_ip", Key::Ip(ip))),
            user.map(|(rule, name)| ("user", Key::User(rule, name))),
        ];
        for (by, key) in keys.into_iter().flatten() {
            let s = self.failures.peek(&key, now);
            if s.estimate() >= f64::from(self.max_failures) {
                return Err(Throttled::Locked {
                    by,
                    limit: self.max_failures,
                    retry_after: window::whole_seconds(s.wait_for(self.max_failures)),
                });
            }
        }
        Ok(())
    }

    /// Count a failed attempt against its client IP and (`user`: rule, name).
    pub fn failed(&self, ip: Option<IpAddr>, user: Option<(&str, &str)>) {
        if self.max_failures == 0 {
            return;
        }
        let now = window::now_ms();
        self.failures.hit(&Key::Ip(ip), now);
        if let Some((rule, name)) = user {
            self.failures.hit(&Key::User(rule, name), now);
        }
    }

    /// A password-verification slot, held until dropped (move it into the blocking task).
    pub fn permit(&self) -> Result<OwnedSemaphorePermit, Throttled> {
        self.verifications
            .clone()
            .try_acquire_owned()
            .map_err(|_| Throttled::Busy { slots: self.slots })
    }

    /// How long a verified credential is remembered, ms (`0`: not at all).
    pub fn cache_ttl_ms(&self) -> u64 {
        self.cache_ttl_ms
    }

    /// The cache's keyed hash of `credential` under `rule`.
    pub fn tag(&self, rule: &str, credential: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(CACHE_KEY.as_slice()).expect("any key length");
        mac.update(&(rule.len() as u64).to_be_bytes());
        mac.update(rule.as_bytes());
        mac.update(credential);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::Dur;

    fn throttle(max_failures: u32, slots: u32) -> AuthThrottle {
        AuthThrottle::build(&AuthThrottleConfig {
            max_failures,
            window: Dur::secs(60),
            max_concurrent_verifications: slots,
            ..Default::default()
        })
    }

    #[test]
    fn failures_lock_the_ip_and_the_user_apart() {
        let t = throttle(3, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check(Some(a), Some(("r", "alice"))).is_ok());
            t.failed(Some(a), Some(("r", "alice")));
        }
        let Err(Throttled::Locked {
            by, retry_after, ..
        }) = t.check(Some(a), Some(("r", "bob")))
        else {
            panic!("not locked");
        };
        assert_eq!(by, "client_ip");
        assert!((1..=120).contains(&retry_after), "{retry_after}");
        // Another address: alice is locked, bob is not.
        assert_eq!(
            t.check(Some(b), Some(("r", "alice"))).unwrap_err().reason(),
            "user"
        );
        assert!(t.check(Some(b), Some(("r", "bob"))).is_ok());
        assert!(t.check(Some(b), Some(("other-rule", "alice"))).is_ok());
        assert!(throttle(0, 1).check(Some(a), None).is_ok());
    }

    #[test]
    fn slots_are_bounded_and_tags_are_keyed() {
        let t = throttle(3, 1);
        let held = t.permit().unwrap();
        assert_eq!(t.permit().unwrap_err(), Throttled::Busy { slots: 1 });
        drop(held);
        assert!(t.permit().is_ok());
        assert_eq!(t.tag("r", b"alice:pw"), t.tag("r", b"alice:pw"));
        assert_ne!(t.tag("r", b"alice:pw"), t.tag("r", b"alice:pX"));
        assert_ne!(t.tag("r", b"alice:pw"), t.tag("s", b"alice:pw"));
        let plain: [u8; 32] = <Sha256 as sha2::Digest>::digest(b"alice:pw").into();
        assert_ne!(t.tag("r", b"alice:pw"), plain);
    }
}
