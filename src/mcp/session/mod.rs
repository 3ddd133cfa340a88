//! Sealed session ids: session affinity with no shared store.
//!
//! When a replica answers `initialize` with `Mcp-Session-Id: X`, the client receives
//! `seal(group, owner, server id, X)` instead: XChaCha20-Poly1305 over the server id, `X`
//! and the issue time, with a digest of the group name and of the client's identity (its
//! auth method, rule and subject; "anonymous" on routes without authentication) as
//! associated data. On the way in the gateway opens it for the group and the identity of
//! that request, so an id presented by anyone but the client it was issued to does not
//! open. It then routes to that server and forwards `X`. Any gateway replica holding the
//! key can do this, so no session table is shared or kept. Keys rotate: the first key
//! seals, every key opens. Each worker thread remembers the ids it opened lately
//! ([`recent`]), so a client's next request with its id costs a lookup, not a decryption.

mod recent;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use recent::Recent;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use thread_local::ThreadLocal;

/// 2: the associated data binds the owner's identity (1 bound the group only; such ids
/// no longer open).
const VERSION: u8 = 2;
/// The first byte of a sealed payload ([`SessionKeys::seal_payload`]).
const PAYLOAD_VERSION: u8 = 3;
const NONCE_LEN: usize = 24;

/// Whom a session belongs to: the parts of the caller's identity a sealed id is bound
/// to (the request path builds it from the authenticated identity; `None`: anonymous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    /// The authentication method (`jwt`, `api_key`, …).
    pub method: &'a str,
    /// The auth rule that accepted the caller.
    pub rule: &'a str,
    pub subject: &'a str,
    /// Tells apart tokens without `sub` (client credentials) of different clients.
    pub client_id: Option<&'a str>,
}

/// What a sealed id carries (shared text: an id a thread's table answers is handed out
/// without a copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub server_id: Arc<str>,
    pub upstream_session: Arc<str>,
    /// Seconds since the Unix epoch when the session was sealed.
    pub issued_at: u64,
    /// Sealed with the first key, the one that seals now: sealing what it carries again
    /// gives an id just as good as it (see `proxy::forward::client_fields`).
    pub by_first_key: bool,
}

/// The configured keys; a clone shares them and the ids each thread opened with them.
#[derive(Clone)]
pub struct SessionKeys(Arc<Keys>);

struct Keys {
    ciphers: Vec<XChaCha20Poly1305>,
    /// The ids each thread opened with these keys ([`recent`]).
    recent: ThreadLocal<RefCell<Recent>>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKeys({} keys)", self.0.ciphers.len())
    }
}

impl SessionKeys {
    /// Decode one configured key: 32 bytes in base64 (standard or URL-safe alphabet).
    pub fn decode_key(s: &str) -> Result<[u8; 32], String> {
        let s = s.trim();
        let bytes = STANDARD
            .decode(s)
            .or_else(|_| URL_SAFE.decode(s))
            .or_else(|_| URL_SAFE_NO_PAD.decode(s))
            .map_err(|_| {
                "not valid base64 (generate a key with: openssl rand -base64 32)".to_string()
            })?;
        bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "a key must be 32 bytes, this one is {} (openssl rand -base64 32)",
                b.len()
            )
        })
    }

    /// Decode the configured keys, skipping empty entries (`${VAR:-}` with `VAR` unset).
    /// The one reading of `sessions.keys`, for validation and start alike: every
    /// problem comes with the index of its entry.
    pub fn decode_keys(keys: &[String]) -> Result<Vec<[u8; 32]>, Vec<(usize, String)>> {
        let mut raw = Vec::with_capacity(keys.len());
        let mut problems = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if k.trim().is_empty() {
                continue;
            }
            match Self::decode_key(k) {
                Ok(k) => raw.push(k),
                Err(e) => problems.push((i, e)),
            }
        }
        if problems.is_empty() {
            Ok(raw)
        } else {
            Err(problems)
        }
    }

    /// Keys from config; with none, one random key (sessions then live only as long as
    /// this process and cannot span gateway replicas). Returns whether a key was generated.
    pub fn from_config(keys: &[String]) -> Result<(SessionKeys, bool), String> {
        let mut raw = Self::decode_keys(keys).map_err(|problems| {
            problems
                .into_iter()
                .map(|(i, e)| format!("sessions.keys[{i}]: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let generated = raw.is_empty();
        if generated {
            let mut k = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut k);
            raw.push(k);
        }
        let ciphers = raw
            .iter()
            .map(|k| XChaCha20Poly1305::new(k.into()))
            .collect();
        let recent = ThreadLocal::new();
        Ok((SessionKeys(Arc::new(Keys { ciphers, recent })), generated))
    }

    /// Seal an upstream session id minted by `server_id` of `group` for `owner` (`None`:
    /// an anonymous client), issued at `issued_at` (seconds since the Unix epoch; see
    /// [`now`]).
    pub fn seal(
        &self,
        group: &str,
        owner: Option<Owner<'_>>,
        server_id: &str,
        upstream_session: &str,
        issued_at: u64,
    ) -> String {
        let id = server_id.as_bytes();
        let id_len = u8::try_from(id.len()).unwrap_or(u8::MAX);
        let mut plain = Vec::with_capacity(10 + id.len() + upstream_session.len());
        plain.push(VERSION);
        plain.extend_from_slice(&issued_at.to_be_bytes());
        plain.push(id_len);
        plain.extend_from_slice(&id[..id_len as usize]);
        plain.extend_from_slice(upstream_session.as_bytes());
        self.seal_raw(&associated_data(group, owner), &plain)
    }

    /// Open a sealed id presented for `group` by `owner`; `None` if forged, tampered, for
    /// another group, issued to another identity, or sealed with a key no longer
    /// configured. An id this thread opened for the same group and owner before is
    /// answered from its table ([`recent`]).
    pub fn open(&self, group: &str, owner: Option<Owner<'_>>, token: &str) -> Option<Opened> {
        let recent = self.0.recent.get_or(|| RefCell::new(Recent::new()));
        if let Some(opened) = recent.borrow().get(group, owner, token) {
            return Some(opened);
        }
        let opened = self.open_sealed(group, owner, token)?;
        recent.borrow_mut().put(group, owner, token, &opened);
        Some(opened)
    }

    /// How many ids this thread's table keeps (tests).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.0.recent.get().map_or(0, |r| r.borrow().len())
    }

    /// [`SessionKeys::open`] by decryption.
    fn open_sealed(&self, group: &str, owner: Option<Owner<'_>>, token: &str) -> Option<Opened> {
        let (plain, key) = self.open_raw(&associated_data(group, owner), token)?;
        if plain.len() < 10 || plain[0] != VERSION {
            return None;
        }
        let issued_at = u64::from_be_bytes(plain[1..9].try_into().ok()?);
        let id_len = plain[9] as usize;
        let rest = &plain[10..];
        if rest.len() < id_len {
            return None;
        }
        let (id, session) = rest.split_at(id_len);
        Some(Opened {
            server_id: std::str::from_utf8(id).ok()?.into(),
            upstream_session: std::str::from_utf8(session).ok()?.into(),
            issued_at,
            by_first_key: key == 0,
        })
    }
}

impl SessionKeys {
    /// Seal `payload` for `domain` (a virtual server's session, cursor or request id:
    /// the caller names what and where) and `owner`: opens only with [`open_payload`]
    /// for the same domain and owner. Its first byte marks it as a payload, so it never
    /// opens as a group's session id, nor one of those as a payload.
    ///
    /// [`open_payload`]: SessionKeys::open_payload
    pub fn seal_payload(&self, domain: &str, owner: Option<Owner<'_>>, payload: &[u8]) -> String {
        let mut plain = Vec::with_capacity(1 + payload.len());
        plain.push(PAYLOAD_VERSION);
        plain.extend_from_slice(payload);
        self.seal_raw(&associated_data(domain, owner), &plain)
    }

    /// Open what [`SessionKeys::seal_payload`] sealed for `domain` and `owner`; `None` if
    /// forged, tampered, sealed for another domain or owner, or with a key no longer
    /// configured.
    pub fn open_payload(
        &self,
        domain: &str,
        owner: Option<Owner<'_>>,
        token: &str,
    ) -> Option<Vec<u8>> {
        let (mut plain, _) = self.open_raw(&associated_data(domain, owner), token)?;
        if plain.first() != Some(&PAYLOAD_VERSION) {
            return None;
        }
        plain.remove(0);
        Some(plain)
    }

    /// Encrypt `plain` under the first key with `aad`: nonce and ciphertext, base64url.
    fn seal_raw(&self, aad: &[u8], plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self.0.ciphers[0]
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Decrypt a token of [`SessionKeys::seal_raw`] with any configured key: the plain
    /// text and the index of the key that opened it.
    fn open_raw(&self, aad: &[u8], token: &str) -> Option<(Vec<u8>, usize)> {
        let raw = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
        if raw.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        self.0.ciphers.iter().enumerate().find_map(|(i, c)| {
            c.decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
                .ok()
                .map(|plain| (plain, i))
        })
    }
}

/// Seconds since the Unix epoch (the clock of `issued_at`).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a sealed id is bound to: SHA-256 over the group and the owner (auth method, rule,
/// subject and client id, each length-prefixed so no two owners share an encoding), on the stack.
fn associated_data(group: &str, owner: Option<Owner<'_>>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"mcp-gateway session v2\0");
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(group.as_bytes());
    match owner {
        None => field(b"anonymous"),
        Some(who) => {
            field(b"identity");
            field(who.method.as_bytes());
            field(who.rule.as_bytes());
            field(who.subject.as_bytes());
            field(who.client_id.unwrap_or_default().as_bytes());
        }
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> SessionKeys {
        SessionKeys::from_config(&k.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
            .0
    }
    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    fn who<'a>(method: &'a str, rule: &'a str, subject: &'a str) -> Owner<'a> {
        Owner {
            method,
            rule,
            subject,
            client_id: None,
        }
    }

    #[test]
    fn round_trip_and_visible_ascii() {
        let k = keys(&[K1]);
        let t = k.seal("files", None, "files-1", "abc-123", 1234);
        assert!(t.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        let o = k.open("files", None, &t).unwrap();
        assert_eq!(&*o.server_id, "files-1");
        assert_eq!(&*o.upstream_session, "abc-123");
        assert_eq!(o.issued_at, 1234);
    }

    #[test]
    fn other_group_tampered_or_forged_is_refused() {
        let k = keys(&[K1]);
        let t = k.seal("files", None, "files-1", "abc", now());
        assert!(k.open("web", None, &t).is_none());
        let mut b = t.into_bytes();
        let last = b.len() - 1;
        b[last] = if b[last] == b'A' { b'B' } else { b'A' };
        assert!(k
            .open("files", None, std::str::from_utf8(&b).unwrap())
            .is_none());
        assert!(k.open("files", None, "not-a-session").is_none());
        assert!(k.open("files", None, "").is_none());
        assert!(k.open("files", None, "!!!").is_none());
    }

    #[test]
    fn only_the_owner_opens_it() {
        let k = keys(&[K1]);
        let alice = who("jwt", "idp", "alice");
        let t = k.seal("g", Some(alice), "s", "x", now());
        assert_eq!(
            &*k.open("g", Some(alice), &t).unwrap().upstream_session,
            "x"
        );
        let others = [
            who("jwt", "idp", "bob"),
            who("jwt", "other-rule", "alice"),
            who("api_key", "idp", "alice"),
            who("jwt", "idp", "alic"),
            Owner {
                client_id: Some("app"),
                ..who("jwt", "idp", "alice")
            },
        ];
        for other in &others {
            assert!(k.open("g", Some(*other), &t).is_none(), "{other:?}");
        }
        assert!(k.open("g", None, &t).is_none(), "anonymous");
        // And an anonymous session opens for no identity.
        let anon = k.seal("g", None, "s", "x", now());
        assert!(k.open("g", Some(alice), &anon).is_none());
        assert!(k.open("g", None, &anon).is_some());
        // Fields are length-prefixed: moving a byte between them changes the binding.
        let split = k.seal("g", Some(who("jwt", "ab", "c")), "s", "x", now());
        assert!(k.open("g", Some(who("jwt", "a", "bc")), &split).is_none());
    }

    #[test]
    fn payloads_open_only_in_their_domain_and_never_as_session_ids() {
        let k = keys(&[K1]);
        let alice = who("jwt", "idp", "alice");
        let t = k.seal_payload("vs:/mcp", Some(alice), b"members");
        assert_eq!(
            k.open_payload("vs:/mcp", Some(alice), &t).unwrap(),
            b"members"
        );
        assert!(k.open_payload("vs:/other", Some(alice), &t).is_none());
        assert!(k.open_payload("vs:/mcp", None, &t).is_none());
        assert!(k.open("vs:/mcp", Some(alice), &t).is_none());
        let id = k.seal("vs:/mcp", None, "s", "x", now());
        assert!(k.open_payload("vs:/mcp", None, &id).is_none());
    }

    #[test]
    fn an_id_opened_again_is_answered_from_the_thread_table_for_its_binding_only() {
        let k = keys(&[K1]);
        let alice = who("jwt", "idp", "alice");
        let t = k.seal("g", Some(alice), "s", "x", 42);
        assert_eq!(k.kept(), 0);
        let first = k.open("g", Some(alice), &t).unwrap();
        assert_eq!(k.kept(), 1, "what opened is kept");
        assert_eq!(k.open("g", Some(alice), &t).unwrap(), first);
        // A kept id opens for no other binding, and a tampered one not at all.
        assert!(k.open("g", Some(who("jwt", "idp", "bob")), &t).is_none());
        assert!(k.open("g", None, &t).is_none());
        assert!(k.open("h", Some(alice), &t).is_none());
        let mut b = t.clone().into_bytes();
        b[30] = if b[30] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(b).unwrap();
        assert!(k.open("g", Some(alice), &tampered).is_none());
        assert!(k.open("g", Some(alice), "not-a-session").is_none());
        assert_eq!(k.kept(), 1, "what did not open is not kept");
        // A clone shares the keys and their tables; other keys have their own, and so
        // has every other thread.
        assert_eq!(k.clone().kept(), 1);
        let rotated = keys(&[K2]);
        assert!(rotated.open("g", Some(alice), &t).is_none());
        assert_eq!(rotated.kept(), 0);
        let shared = k.clone();
        std::thread::spawn(move || assert_eq!(shared.kept(), 0))
            .join()
            .unwrap();
    }

    #[test]
    fn a_kept_id_is_answered_without_decryption() {
        let k = keys(&[K1]);
        let t = k.seal("g", None, "s", "x", 42);
        assert!(k.open("g", None, &t).is_some());
        // What the table holds is what opens: put there under an id that decrypts to
        // something else, it is what the id opens to (for its binding only).
        let other = Opened {
            server_id: "kept".into(),
            upstream_session: "from the table".into(),
            issued_at: 7,
            by_first_key: true,
        };
        let recent = k.0.recent.get().unwrap();
        recent.borrow_mut().put("g", None, &t, &other);
        assert_eq!(k.open("g", None, &t).unwrap(), other);
        assert!(k.open("g", Some(who("jwt", "idp", "alice")), &t).is_none());
    }

    #[test]
    fn long_ids_open_but_are_not_kept() {
        let k = keys(&[K1]);
        let long = "u".repeat(recent::LONGEST);
        let t = k.seal("g", None, "s", &long, 42);
        assert_eq!(*k.open("g", None, &t).unwrap().upstream_session, *long);
        assert_eq!(k.kept(), 0);
    }

    #[test]
    fn rotation_opens_with_previous_key() {
        let old = keys(&[K1]);
        let t = old.seal("g", None, "s", "x", now());
        let rotated = keys(&[K2, K1]);
        let opened = rotated.open("g", None, &t).unwrap();
        assert_eq!(&*opened.upstream_session, "x");
        assert!(!opened.by_first_key, "opened by the second key");
        assert!(old.open("g", None, &t).unwrap().by_first_key);
        assert!(keys(&[K2]).open("g", None, &t).is_none());
    }

    #[test]
    fn empty_entries_are_skipped_and_problems_name_their_entry() {
        let (_, generated) = SessionKeys::from_config(&["".into(), "  ".into()]).unwrap();
        assert!(generated, "no key left: one is generated");
        let (k, generated) = SessionKeys::from_config(&["".into(), K1.into()]).unwrap();
        assert!(!generated);
        let t = keys(&[K1]).seal("g", None, "s", "x", now());
        assert!(k.open("g", None, &t).is_some());
        let err = SessionKeys::from_config(&["".into(), "c2hvcnQ=".into()]).unwrap_err();
        assert!(
            err.starts_with("sessions.keys[1]: a key must be 32 bytes"),
            "{err}"
        );
    }

    #[test]
    fn key_validation() {
        assert!(SessionKeys::decode_key(K1).is_ok());
        assert!(SessionKeys::decode_key("c2hvcnQ=")
            .unwrap_err()
            .contains("32 bytes"));
        assert!(SessionKeys::decode_key("%%%")
            .unwrap_err()
            .contains("base64"));
    }
}
