//! Security at the edge: client authentication ([`auth`]), browser origins ([`cors`])
//! and request rate limits ([`rate_limit`]); the client's own credentials are never
//! forwarded upstream (see `proxy::forward`).

pub mod auth;
pub mod cors;
pub mod rate_limit;
