//! What a client of a virtual server holds, sealed with the session keys (XChaCha20-
//! Poly1305, bound to the virtual server's path and the caller's identity), so that any
//! replica with the same keys serves it and nobody can forge or alter it:
//!
//! * the session ([`SessionState`]): the version negotiated with the client, what the
//!   client said in `initialize` (to initialize a member again), and each member's
//!   server, session id, version and capabilities;
//! * a list cursor ([`Cursor`]): the list, the catalog generation, the member and the
//!   member's own cursor;
//! * the id of a member's request to the client ([`RequestId`]): the member and the id
//!   it used, whose JSON type comes back unchanged; the same for the progress token
//!   inside such a request, so the client's `notifications/progress` reaches that member.

use crate::mcp::session::{Owner, SessionKeys};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::state::virtual_servers::{MemberSession, SessionState};

/// A cursor of a merged list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The list's method.
    #[serde(rename = "l")]
    pub list: String,
    /// The catalog generation ([`crate::state::virtual_servers::VirtualServer::generation`]).
    #[serde(rename = "g")]
    pub generation: u64,
    /// The member whose page comes next.
    #[serde(rename = "m")]
    pub member: usize,
    /// Its own cursor (none: its first page).
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The id the client sees on a member's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestId {
    /// The member's prefix.
    #[serde(rename = "m")]
    pub member: String,
    /// The id the member used.
    #[serde(rename = "i")]
    pub id: Value,
}

/// Sealing and opening for one virtual server and caller.
pub struct Sealer<'a> {
    pub keys: &'a SessionKeys,
    pub path: &'a str,
    pub owner: Option<Owner<'a>>,
}

impl Sealer<'_> {
    fn seal<T: Serialize>(&self, what: &str, value: &T) -> String {
        let json = serde_json::to_vec(value).expect("a token serializes");
        self.keys
            .seal_payload(&format!("virtual {what} {}", self.path), self.owner, &json)
    }

    fn open<T: for<'de> Deserialize<'de>>(&self, what: &str, token: &str) -> Option<T> {
        let plain =
            self.keys
                .open_payload(&format!("virtual {what} {}", self.path), self.owner, token)?;
        serde_json::from_slice(&plain).ok()
    }

    pub fn session(&self, s: &SessionState) -> String {
        self.seal("session", s)
    }

    pub fn open_session(&self, token: &str) -> Option<SessionState> {
        self.open("session", token)
    }

    pub fn cursor(&self, c: &Cursor) -> String {
        self.seal("cursor", c)
    }

    pub fn open_cursor(&self, token: &str) -> Option<Cursor> {
        self.open("cursor", token)
    }

    pub fn request_id(&self, r: &RequestId) -> String {
        self.seal("request", r)
    }

    pub fn open_request_id(&self, token: &str) -> Option<RequestId> {
        self.open("request", token)
    }

    /// The progress token of a member's request to the client (`id`: the member's token).
    pub fn progress_token(&self, r: &RequestId) -> String {
        self.seal("progress", r)
    }

    pub fn open_progress_token(&self, token: &str) -> Option<RequestId> {
        self.open("progress", token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_stay_in_their_kind() {
        let keys = SessionKeys::from_config(&[]).unwrap().0;
        let s = Sealer {
            keys: &keys,
            path: "/mcp",
            owner: None,
        };
        let mut state = SessionState {
            version: "2025-11-25".into(),
            issued_at: 7,
            ..Default::default()
        };
        state.members.insert(
            "files".into(),
            MemberSession {
                server: "s1".into(),
                session: Some("abc".into()),
                version: "2025-06-18".into(),
                caps: 5,
            },
        );
        let t = s.session(&state);
        assert_eq!(s.open_session(&t), Some(state));
        assert!(s.open_cursor(&t).is_none(), "a session is not a cursor");
        let other = Sealer {
            path: "/other",
            ..s
        };
        assert!(other.open_session(&t).is_none());
        let id = RequestId {
            member: "files".into(),
            id: serde_json::json!(0),
        };
        let sealed = other.request_id(&id);
        assert_eq!(other.open_request_id(&sealed), Some(id));
    }
}
