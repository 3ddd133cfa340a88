//! mcp-gateway: an edge proxy for the Model Context Protocol, built on Pingora.
//!
//! The modules in their layer order, from the ground up (each names only lower layers;
//! docs/architecture.md, "Layers", and `tests/layers.rs` keep it so):
//! [`error`] and [`clock`]; [`mcp`] (JSON-RPC envelopes, eras, MCP headers, sealed
//! sessions); [`config`] (the YAML contract and the checks it makes alone); [`telemetry`]
//! (logger, metric families, tracing); [`security`] (auth, policies, rate limits, CORS,
//! the edge, TLS files); [`upstream`] (groups, selection, health, breakers, the one
//! exchange with a server); [`state`] (the runtime state
//! built from a config, and the checks that need it); [`live`] (the running state,
//! swapped whole by a reload); [`federation`] (virtual servers: the gateway as the MCP
//! server of many groups); [`proxy`] (the `ProxyHttp` hooks and the request path);
//! [`admin`] and [`lifecycle`] (signals, reload watcher, graceful end); [`control`] and
//! [`app`] (config → Pingora server).

pub mod admin;
pub mod app;
pub mod cache;
pub mod clock;
pub mod config;
pub mod control;
pub mod error;
pub mod federation;
pub mod lifecycle;
pub mod live;
pub mod mcp;
pub mod prehashed;
pub mod proxy;
pub mod security;
pub mod state;
pub mod telemetry;
pub mod transform;
pub mod transport;
pub mod upstream;
