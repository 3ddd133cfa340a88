//! Virtual servers: one MCP endpoint whose catalog is the union of several upstream
//! groups' (its members). The gateway is the MCP server to the client and an MCP client
//! to each member (docs/federation.md has the model, names, cursors, sessions and the
//! failure table).
//!
//! * [`names`]: prefixed tool and prompt names, prefixed resource URIs, tool filters;
//! * [`member`]: one JSON-RPC request to a member over the upstream exchange (balancing,
//!   failover before sending, breakers, `upstream_auth`, `forward_identity`), its answer
//!   as JSON or as SSE events;
//! * [`token`]: what the client holds, sealed with the session keys: the session (each
//!   member's session and server), list cursors, the ids of members' requests;
//! * [`handshake`]: `initialize` (legacy) and `server/discover` (modern), merged;
//! * [`catalog`]: the four lists, fanned out, prefixed, merged in config order, paged;
//! * [`rewrite`]: URIs in results and notifications;
//! * [`relay`]: a member's SSE answer relayed event by event, and the merged GET stream;
//! * [`listen`]: `subscriptions/listen` (modern era) split per member and merged;
//! * [`serve`]: the dispatch of one client request;
//! * [`sessions`]: sending to a member in the request's era and session;
//! * [`fan`]: what goes to every member of a session (and a reply's one answer);
//! * [`cache`]: members' answers kept (`cache.routes[]` with `member:`), and the
//!   notifications that drop them;
//! * [`transform`]: members' transforms (`transforms[]` with `member:`).
//!
//! Authentication, policies (on prefixed names), rate limits, CORS, metrics and the
//! access log run before, in the request path, exactly as for a route.

pub mod cache;
pub mod catalog;
pub mod coalesce;
pub mod fan;
pub mod handshake;
pub mod listen;
pub mod member;
pub mod names;
pub mod relay;
pub mod rewrite;
pub mod serve;
pub mod sessions;
pub mod token;
pub mod transform;

pub use crate::state::virtual_servers::{Member, MemberStatus, VirtualServer, VirtualServers};
pub use serve::{serve, Answer, Request};
