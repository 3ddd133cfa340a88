//! Sealed session ids: session affinity with no shared store.
//!
//! When a replica answers `initialize` with `Mcp-Session-Id: X`, the client receives
//! `seal(group, server id, X)` instead: XChaCha20-Poly1305 over the server id, `X` and the
//! issue time, with the group name as associated data. On the way in the gateway opens it,
//! routes to that server and forwards `X`. Any gateway replica holding the key can do this,
//! so no session table is shared or kept. Keys rotate: the first key seals, every key opens.

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::time::{SystemTime, UNIX_EPOCH};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// What a sealed id carries.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    pub server_id: String,
    pub upstream_session: String,
    /// Seconds since the Unix epoch when the session was sealed.
    pub issued_at: u64,
}

#[derive(Clone)]
pub struct SessionKeys {
    ciphers: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKeys({} keys)", self.ciphers.len())
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

    /// Keys from config; with none, one random key (sessions then live only as long as
    /// this process and cannot span gateway replicas). Returns whether a key was generated.
    pub fn from_config(keys: &[String]) -> Result<(SessionKeys, bool), String> {
        let mut raw = keys
            .iter()
            .map(|k| Self::decode_key(k))
            .collect::<Result<Vec<_>, _>>()?;
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
        Ok((SessionKeys { ciphers }, generated))
    }

    /// Seal an upstream session id minted by `server_id` of `group`.
    pub fn seal(&self, group: &str, server_id: &str, upstream_session: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.seal_at(group, server_id, upstream_session, now)
    }

    fn seal_at(
        &self,
        group: &str,
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
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self.ciphers[0]
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: group.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Open a sealed id presented for `group`; `None` if forged, tampered, for another
    /// group, or sealed with a key no longer configured.
    pub fn open(&self, group: &str, token: &str) -> Option<Opened> {
        let raw = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
        if raw.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = self.ciphers.iter().find_map(|c| {
            c.decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: group.as_bytes(),
                },
            )
            .ok()
        })?;
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
            server_id: String::from_utf8(id.to_vec()).ok()?,
            upstream_session: String::from_utf8(session.to_vec()).ok()?,
            issued_at,
        })
    }
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

    #[test]
    fn round_trip_and_visible_ascii() {
        let k = keys(&[K1]);
        let t = k.seal("files", "files-1", "abc-123");
        assert!(t.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        let o = k.open("files", &t).unwrap();
        assert_eq!(o.server_id, "files-1");
        assert_eq!(o.upstream_session, "abc-123");
        assert!(o.issued_at > 0);
    }

    #[test]
    fn other_group_tampered_or_forged_is_refused() {
        let k = keys(&[K1]);
        let t = k.seal("files", "files-1", "abc");
        assert!(k.open("web", &t).is_none());
        let mut b = t.into_bytes();
        let last = b.len() - 1;
        b[last] = if b[last] == b'A' { b'B' } else { b'A' };
        assert!(k.open("files", std::str::from_utf8(&b).unwrap()).is_none());
        assert!(k.open("files", "not-a-session").is_none());
        assert!(k.open("files", "").is_none());
        assert!(k.open("files", "!!!").is_none());
    }

    #[test]
    fn rotation_opens_with_previous_key() {
        let old = keys(&[K1]);
        let t = old.seal("g", "s", "x");
        let rotated = keys(&[K2, K1]);
        assert_eq!(rotated.open("g", &t).unwrap().upstream_session, "x");
        assert!(keys(&[K2]).open("g", &t).is_none());
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
