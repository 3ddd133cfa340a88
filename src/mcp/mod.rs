//! The Model Context Protocol as the gateway sees it: JSON-RPC envelopes, eras,
//! MCP headers, sealed session ids, and how deep a message nests.

pub mod depth;
pub mod envelope;
pub mod headers;
pub mod session;
pub mod text;
