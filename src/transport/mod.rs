//! Upstreams that do not speak Streamable HTTP, adapted to it behind a local socket the
//! gateway owns, so that routing, balancing, health checks, breakers, metrics and virtual
//! servers treat them as any other server (docs/transports.md).
//!
//! * [`stdio`]: servers the gateway runs as child processes (`command:`).

pub mod stdio;
