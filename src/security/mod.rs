//! Security at the edge: TLS termination and client certificates ([`tls`]), client
//! authentication ([`auth`]); the client's own credentials are never forwarded upstream
//! (see `proxy::forward`).

pub mod auth;
pub mod cors;
pub mod rate_limit;
pub mod tls;
