//! Security at the edge, all decided in the proxy's request filter: where the request
//! comes from and which host it names ([`edge`]), who is calling
//! ([`auth`]: one file a method — JWT and JWKS, API keys, Basic, OAuth resource-server
//! metadata, client certificates — with the rules that pick among them, the shared
//! `Identity` and `Refusal`, and the failed-attempt throttle; [`tls`] terminates TLS and
//! hands `auth` the verified client certificate, never the reverse),
//! what they may call ([`policy`], which also filters lists), how often ([`rate_limit`])
//! and how many streams at once ([`streams`]), from which browser origins ([`cors`]), and
//! what servers learn of the client ([`forward_identity`]; the client's own credentials
//! are never forwarded, see `proxy::forward`).

pub mod auth;
pub mod cors;
pub mod edge;
pub mod forward_identity;
pub mod policy;
pub mod rate_limit;
pub mod streams;
pub mod tls;
pub mod window;
