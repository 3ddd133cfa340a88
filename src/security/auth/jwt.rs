//! Bearer JWTs (`jsonwebtoken`): a rule's key (an HMAC secret, a PEM RSA / EC / Ed25519
//! public key, or a [`Jwks`]), its accepted algorithms (all of the key's family, so an
//! HMAC token can never be checked against a public key; `alg: none` never), the
//! validation (`exp` required, `nbf` enforced, issuer and audience when configured), and
//! the check of a presented token, which refuses critical header extensions (`crit`).

use super::identity::Failure;
use super::jwks::Jwks;
use super::oauth::OAuth;
use super::{Identity, Problems};
use crate::config::JwtConfig;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::sync::Arc;

pub(super) struct Jwt {
    keys: JwtKeys,
    validation: Validation,
}

impl Jwt {
    /// The leeway `exp` is checked with (seconds).
    pub(super) fn leeway(&self) -> u64 {
        self.validation.leeway
    }
}

enum JwtKeys {
    One(DecodingKey),
    Jwks(Jwks),
}

/// The JWT side of a rule; problems are named under the rule.
pub(super) fn build(c: &JwtConfig) -> Result<Jwt, Problems> {
    let mut errs: Problems = Vec::new();
    let secret = c.secret.as_deref().filter(|s| !s.is_empty());
    let sources = [
        secret.is_some(),
        c.public_key_file.is_some(),
        c.jwks_file.is_some(),
        c.jwks_url.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources == 1 && (c.jwks_file.is_some() || c.jwks_url.is_some()) {
        return build_jwks(c);
    }
    if sources > 1 {
        errs.push((
            "jwt".into(),
            "set exactly one of secret, public_key_file, jwks_file, jwks_url".into(),
        ));
        return Err(errs);
    }
    let key = match (secret, &c.public_key_file) {
        (Some(s), None) => {
            if s.len() < 32 {
                errs.push((
                    "jwt.secret".into(),
                    "must be at least 32 bytes (e.g. `openssl rand -base64 48`)".into(),
                ));
            }
            Some((DecodingKey::from_secret(s.as_bytes()), KeyKind::Hmac))
        }
        (None, Some(path)) => match std::fs::read(path) {
            Err(e) => {
                errs.push((
                    "jwt.public_key_file".into(),
                    format!("cannot read {path:?}: {e}"),
                ));
                None
            }
            Ok(pem) => public_key(&pem)
                .map_err(|m| errs.push(("jwt.public_key_file".into(), format!("{path:?}: {m}"))))
                .ok(),
        },
        _ => {
            errs.push((
                "jwt".into(),
                "set one of secret (HS*), public_key_file, jwks_file or jwks_url (RS*, PS*, ES*, EdDSA)"
                    .into(),
            ));
            None
        }
    };
    let algorithms = parse_algorithms(c, &mut errs, |alg, a| {
        key.as_ref()
            .filter(|(_, kind)| !kind.accepts(alg))
            .map(|(_, kind)| format!("{a} does not match the {} key", kind.name()))
    });
    let Some((key, _)) = key.filter(|_| errs.is_empty()) else {
        return Err(errs);
    };
    Ok(Jwt {
        keys: JwtKeys::One(key),
        validation: validation(c, algorithms),
    })
}

/// A JWT rule whose keys come from a JWKS: asymmetric algorithms only.
fn build_jwks(c: &JwtConfig) -> Result<Jwt, Problems> {
    let mut errs: Problems = Vec::new();
    let algorithms = parse_algorithms(c, &mut errs, |alg, a| {
        (alg.family() == jsonwebtoken::AlgorithmFamily::Hmac).then(|| {
            format!("{a}: a JWKS supplies public keys; HMAC algorithms cannot be used with it")
        })
    });
    let jwks = Jwks::build(c).map_err(|e| errs.extend(e)).ok();
    match jwks {
        Some(jwks) if errs.is_empty() => Ok(Jwt {
            keys: JwtKeys::Jwks(jwks),
            validation: validation(c, algorithms),
        }),
        _ => Err(errs),
    }
}

/// The configured algorithms; `refuse` says why one cannot be used with this key source.
fn parse_algorithms(
    c: &JwtConfig,
    errs: &mut Problems,
    refuse: impl Fn(Algorithm, &str) -> Option<String>,
) -> Vec<Algorithm> {
    if c.algorithms.is_empty() {
        errs.push((
            "jwt.algorithms".into(),
            "list the accepted algorithms, e.g. [RS256]".into(),
        ));
    }
    let mut algorithms = Vec::new();
    for (j, a) in c.algorithms.iter().enumerate() {
        match a.parse::<Algorithm>() {
            Ok(alg) => match refuse(alg, a) {
                Some(why) => errs.push((format!("jwt.algorithms[{j}]"), why)),
                None => algorithms.push(alg),
            },
            Err(_) => errs.push((
                format!("jwt.algorithms[{j}]"),
                format!("{a:?} is not a JWT algorithm (HS256, RS256, PS256, ES256, EdDSA, ...)"),
            )),
        }
    }
    algorithms
}

fn validation(c: &JwtConfig, algorithms: Vec<Algorithm>) -> Validation {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms;
    validation.leeway = c.leeway.0.as_secs();
    validation.validate_nbf = true;
    let mut required = vec!["exp".to_string()];
    required.extend(c.required_claims.iter().cloned());
    validation.set_required_spec_claims(&required);
    match &c.issuer {
        Some(iss) => validation.set_issuer(&[iss]),
        None => validation.iss = None,
    }
    match &c.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    validation
}

#[derive(Clone, Copy)]
enum KeyKind {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl KeyKind {
    fn accepts(self, alg: Algorithm) -> bool {
        use jsonwebtoken::AlgorithmFamily as F;
        matches!(
            (self, alg.family()),
            (KeyKind::Hmac, F::Hmac)
                | (KeyKind::Rsa, F::Rsa)
                | (KeyKind::Ec, F::Ec)
                | (KeyKind::Ed, F::Ed)
        )
    }
    fn name(self) -> &'static str {
        match self {
            KeyKind::Hmac => "HMAC secret",
            KeyKind::Rsa => "RSA",
            KeyKind::Ec => "EC",
            KeyKind::Ed => "Ed25519",
        }
    }
}

/// A token's scopes: OAuth's space-separated `scope`, or `scp` (a list or a string).
fn token_scopes(claims: &serde_json::Map<String, Value>) -> Vec<String> {
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// A PEM public key of any supported kind.
fn public_key(pem: &[u8]) -> Result<(DecodingKey, KeyKind), String> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, KeyKind::Rsa));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok((k, KeyKind::Ec));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((k, KeyKind::Ed));
    }
    Err("not a PEM RSA, EC or Ed25519 public key".into())
}

impl Jwt {
    /// Check a bearer `token` presented to the rule named `rule` (and, on an OAuth
    /// route, its scopes).
    pub(super) async fn check(
        &self,
        rule: &str,
        oauth: Option<&OAuth>,
        token: &[u8],
    ) -> Result<Identity, Failure> {
        use jsonwebtoken::errors::ErrorKind as K;
        let token = std::str::from_utf8(token).unwrap_or_default().trim();
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            Failure::token(
                "malformed",
                "invalid bearer token: the token is not a valid JWT",
            )
        })?;
        // RFC 7515 §4.1.11: extensions the token marks critical must be understood, and
        // this gateway implements none (an empty list is not allowed either).
        if let Some(crit) = &header.crit {
            return Err(Failure::token(
                "unsupported_crit",
                format!(
                    "invalid bearer token: its header marks the extension(s) {:?} critical \
                     (crit), which this gateway does not support",
                    crit
                ),
            ));
        }
        let jwks_key;
        let key = match &self.keys {
            JwtKeys::One(key) => key,
            JwtKeys::Jwks(jwks) => {
                let kid = header.kid.clone().unwrap_or_default();
                jwks_key = jwks.key(&kid).await.ok_or_else(|| {
                    Failure::token(
                        "unknown_key",
                        format!("invalid bearer token: no key {kid:?} in the JWKS"),
                    )
                })?;
                if jwks_key.family() != header.alg.family() {
                    return Err(Failure::token(
                        "wrong_algorithm",
                        "invalid bearer token: the token's algorithm does not match its key",
                    ));
                }
                &jwks_key
            }
        };
        let data = jsonwebtoken::decode::<Value>(token, key, &self.validation).map_err(|e| {
            let (reason, what) = match e.kind() {
                K::ExpiredSignature => ("expired", "the token has expired".to_string()),
                K::ImmatureSignature => (
                    "not_yet_valid",
                    "the token is not valid yet (nbf)".to_string(),
                ),
                K::InvalidIssuer => (
                    "wrong_issuer",
                    "the token's issuer is not accepted".to_string(),
                ),
                K::InvalidAudience => (
                    "wrong_audience",
                    "the token is not for this audience".to_string(),
                ),
                K::InvalidAlgorithm => (
                    "wrong_algorithm",
                    "the token's algorithm is not accepted".to_string(),
                ),
                K::MissingRequiredClaim(c) => {
                    ("missing_claim", format!("the token lacks the {c} claim"))
                }
                K::InvalidSignature => (
                    "bad_signature",
                    "the token's signature does not verify".to_string(),
                ),
                _ => ("malformed", "the token is not a valid JWT".to_string()),
            };
            Failure::token(reason, format!("invalid bearer token: {what}"))
        })?;
        let Value::Object(claims) = data.claims else {
            return Err(Failure::token(
                "malformed",
                "invalid bearer token: its claims are not a JSON object",
            ));
        };
        let str_claim = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
        let subject = str_claim("sub").unwrap_or_default();
        let client_id = str_claim("client_id").or_else(|| str_claim("azp"));
        let scopes = token_scopes(&claims);
        if let Some(o) = oauth {
            o.require_scopes(&scopes).map_err(Failure::Refusal)?;
        }
        Ok(Identity {
            method: "jwt",
            subject,
            client_id,
            scopes,
            claims: Arc::new(claims),
            rule: rule.to_string(),
        })
    }
}
