//! Security at the edge. So far: client authentication ([`auth`]); the client's own
//! credentials are never forwarded upstream (see `proxy::forward`).

pub mod auth;
pub mod cors;
pub mod rate_limit;
