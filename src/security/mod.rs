//! Security at the edge: client authentication ([`auth`]), browser origins ([`cors`]),
//! request rate limits ([`rate_limit`]) and the cap on open streams ([`streams`]); the
//! client's own credentials are never forwarded upstream (see `proxy::forward`).

pub mod auth;
pub mod cors;
pub mod rate_limit;
pub mod streams;
