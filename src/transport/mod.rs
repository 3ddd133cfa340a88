//! Upstreams that do not speak Streamable HTTP, adapted to it behind a local socket the
//! gateway owns, so that routing, balancing, health checks, breakers, metrics and virtual
//! servers treat them as any other server (docs/transports.md).
//!
//! * [`stdio`]: servers the gateway runs as child processes (`command:`), and the bridge
//!   (a Unix socket speaking Streamable HTTP, sessions, pools, supervision) they share
//!   with the other adapters;
//! * [`legacy_sse`]: servers of the 2024-11-05 HTTP+SSE transport (`url: sse+http://…`),
//!   a connection per session through the same bridge;
//! * [`websocket`]: WebSocket servers (`url: ws://…`), a socket per session, likewise;
//! * [`clients`]: the other side: WebSocket and legacy HTTP+SSE *clients*, whose messages
//!   the gateway serves as Streamable HTTP requests to itself.

pub mod clients;
pub mod legacy_sse;
pub mod stdio;
pub mod websocket;
