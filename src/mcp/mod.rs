//! The Model Context Protocol as the gateway sees it: JSON-RPC envelopes, eras,
//! MCP headers, and sealed session ids.

pub mod envelope;
pub mod headers;
pub mod session;
