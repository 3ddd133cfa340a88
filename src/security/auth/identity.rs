//! The types every method shares: who a request comes from once authenticated
//! ([`Identity`]), why it was refused ([`Refusal`]; a method says [`Failure`] and its
//! rule adds the challenge), and what a configured API key or Basic user stands for
//! ([`Grant`]).

use super::throttle::Throttled;
use serde_json::Value;
use std::sync::Arc;

/// Who a request comes from, once authenticated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Identity {
    /// `jwt`, `api_key`, `basic` or `client_cert`.
    pub method: &'static str,
    /// The JWT `sub`, the API key's id, the Basic user name, or the certificate's subject.
    pub subject: String,
    /// The JWT `client_id` / `azp`, or the API key's id.
    pub client_id: Option<String>,
    /// The JWT `scope` / `scp`, or the scopes configured for the key or user.
    pub scopes: Vec<String>,
    /// The JWT's claims, or the claims configured for the key or user.
    pub claims: Arc<serde_json::Map<String, Value>>,
    /// The rule that authenticated it (its `name`).
    pub rule: String,
}

/// Why a request was refused; `reason` is a bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
    /// The `WWW-Authenticate` challenge.
    pub challenge: String,
    /// 403 (authenticated, but the token lacks required scopes) rather than 401.
    pub forbidden: bool,
    /// Refused before checking the credential (429 or 503) rather than 401.
    pub throttled: Option<Throttled>,
}

/// Why a method refused a credential; the rule it belongs to makes the [`Refusal`].
#[derive(Debug)]
pub(super) enum Failure {
    /// A wrong credential, or one not valid here (`401`); `token`: a bearer token was
    /// presented (the challenge says `error="invalid_token"`).
    Refused {
        reason: &'static str,
        message: String,
        token: bool,
    },
    /// Refused before the credential was checked (`429`, `503`).
    Throttled(Throttled),
    /// A refusal complete with its own challenge (an OAuth route's `403`).
    Refusal(Refusal),
}

impl Failure {
    pub(super) fn refused(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure::Refused {
            reason,
            message: message.into(),
            token: false,
        }
    }

    /// A bearer token that was presented but is not valid.
    pub(super) fn token(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure::Refused {
            reason,
            message: message.into(),
            token: true,
        }
    }
}

/// What a configured key or user stands for.
#[derive(Clone)]
pub(super) struct Grant {
    pub(super) id: String,
    pub(super) scopes: Vec<String>,
    pub(super) claims: Arc<serde_json::Map<String, Value>>,
}

impl Grant {
    pub(super) fn new(
        id: &str,
        scopes: &[String],
        claims: &serde_json::Map<String, Value>,
    ) -> Grant {
        Grant {
            id: id.to_string(),
            scopes: scopes.to_vec(),
            claims: Arc::new(claims.clone()),
        }
    }

    /// The identity of a request that presented this grant's credential to `rule`.
    pub(super) fn identity(
        &self,
        method: &'static str,
        client_id: Option<String>,
        rule: &str,
    ) -> Identity {
        Identity {
            method,
            subject: self.id.clone(),
            client_id,
            scopes: self.scopes.clone(),
            claims: self.claims.clone(),
            rule: rule.to_string(),
        }
    }
}
