//! mcp-gateway: an edge proxy for the Model Context Protocol, built on Pingora.
//!
//! A newcomer's map: [`config`] (the YAML contract), [`app`] (config → Pingora server),
//! [`proxy`] (the `ProxyHttp` hooks and the request pipeline), [`mcp`] (JSON-RPC
//! envelopes, eras, MCP headers, sealed sessions), [`upstream`] (groups, selection, and
//! the one exchange with a server outside Pingora's proxy path), [`telemetry`] (logs),
//! [`error`] (the one error type at the edge), [`live`] (the running config, swapped
//! whole by a reload) and [`lifecycle`] (signals, reload, graceful shutdown).

pub mod admin;
pub mod app;
pub mod config;
pub mod control;
pub mod error;
pub mod lifecycle;
pub mod live;
pub mod mcp;
pub mod proxy;
pub mod security;
pub mod telemetry;
pub mod upstream;
