//! The `cache` section: answers the gateway may keep and serve again (docs/caching.md).

use super::units::{ByteSize, Dur};
use crate::config_struct;

config_struct! {
    /// Response caching: a memory level per process, optionally Redis behind it, and the
    /// routes whose answers are kept. Nothing is cached for a route not listed here.
    pub struct CacheConfig {
        memory: CacheMemoryConfig = CacheMemoryConfig::default(),
        /// A second level shared by every replica (unset: memory only).
        redis: Option<CacheRedisConfig> = None,
        /// Add `X-Cache: hit|miss` to the answers of cacheable requests.
        x_cache_header: bool = true,
        routes: Vec<CacheRouteConfig> = Vec::new(),
    }
}

config_struct! {
    pub struct CacheMemoryConfig {
        /// Total size of the entries kept in this process (least recently used go first).
        max_size: ByteSize = ByteSize(64 << 20),
        /// Largest single answer kept; larger ones are passed on and not kept.
        max_entry_size: ByteSize = ByteSize(1 << 20),
    }
}

config_struct! {
    pub struct CacheRedisConfig {
        /// `redis://[[user]:password@]host[:port][/db]` or `rediss://…` (TLS).
        url: String = String::new(),
        /// Prefix of every key (and of the invalidation channel) the gateway uses.
        key_prefix: String = "mcpgw:".to_string(),
        /// Longest wait for one Redis operation; past it the request goes upstream.
        timeout: Dur = Dur::millis(50),
    }
}

config_struct! {
    /// What one route, or one member of a virtual server, keeps.
    pub struct CacheRouteConfig {
        /// A configured route's path, or a virtual server's (with `member`).
        path: String = String::new(),
        /// On a virtual server: the member whose answers are kept (its prefix).
        member: Option<String> = None,
        /// `server/discover`, `tools/list`, `prompts/list`, `resources/list`,
        /// `resources/templates/list` (unset: not cached).
        lists: Option<CacheTtlConfig> = None,
        /// `resources/read` (unset: not cached).
        resources: Option<CacheTtlConfig> = None,
        /// `tools/call` results of the tools listed (glob patterns); no other tool's.
        tools: Vec<CacheToolConfig> = Vec::new(),
    }
}

config_struct! {
    pub struct CacheTtlConfig {
        /// How long an answer is kept; an upstream's `ttlMs` may shorten it, never lengthen it.
        ttl: Dur = Dur::secs(30),
    }
}

config_struct! {
    pub struct CacheToolConfig {
        /// A tool name or glob (`get_*`).
        name: String = String::new(),
        ttl: Dur = Dur::secs(30),
    }
}

/// The checks of the `cache` section that need the rest of the config (`routes`).
pub fn validate(c: &super::Config, errs: &mut super::yaml::Errors) {
    let at = super::yaml::Path::root().key("cache");
    let cache = &c.cache;
    let memory = at.key("memory");
    if cache.memory.max_size.0 == 0 {
        errs.push(&memory.key("max_size"), "must be greater than 0");
    }
    if cache.memory.max_entry_size.0 == 0 {
        errs.push(&memory.key("max_entry_size"), "must be greater than 0");
    } else if cache.memory.max_entry_size.0 > cache.memory.max_size.0 {
        errs.push(
            &memory.key("max_entry_size"),
            "must not be larger than cache.memory.max_size",
        );
    }
    if let Some(redis) = &cache.redis {
        let r = at.key("redis");
        // The URL itself is checked with the objects built from it (`state::check`).
        if redis.url.is_empty() {
            errs.push(&r.key("url"), "is required");
        }
        if redis.timeout.0.is_zero() {
            errs.push(&r.key("timeout"), "must be greater than 0");
        }
        if redis.key_prefix.is_empty() {
            errs.push(
                &r.key("key_prefix"),
                "must not be empty (it keeps the gateway's keys apart from others)",
            );
        }
    }
    let routes = at.key("routes");
    for (i, r) in cache.routes.iter().enumerate() {
        let rp = routes.index(i);
        member_target(c, r.path.as_str(), r.member.as_deref(), &rp, errs);
        if cache.routes[..i]
            .iter()
            .any(|x| x.path == r.path && x.member == r.member)
        {
            let what = match &r.member {
                Some(m) => format!("{:?} with member {m:?}", r.path),
                None => format!("{:?}", r.path),
            };
            errs.push(&rp.key("path"), format!("{what} is listed twice"));
        }
        for (key, ttl) in [("lists", &r.lists), ("resources", &r.resources)] {
            if ttl.as_ref().is_some_and(|t| t.ttl.0.is_zero()) {
                errs.push(
                    &rp.key(key).key("ttl"),
                    "must be greater than 0 (leave the key out to cache nothing)",
                );
            }
        }
        for (j, t) in r.tools.iter().enumerate() {
            let tp = rp.key("tools").index(j);
            if t.name.is_empty() {
                errs.push(&tp.key("name"), "is required");
            } else if let Err(e) = globset::Glob::new(&t.name) {
                errs.push(&tp.key("name"), format!("{:?} is not a glob: {e}", t.name));
            }
            if t.ttl.0.is_zero() {
                errs.push(&tp.key("ttl"), "must be greater than 0");
            }
        }
    }
}

/// Check that `path` (and `member`) name what a cache or transform entry applies to: a
/// configured route (no `member`), or one member of a virtual server (its prefix).
pub fn member_target(
    c: &super::Config,
    path: &str,
    member: Option<&str>,
    at: &super::yaml::Path,
    errs: &mut super::yaml::Errors,
) {
    let route = if c.routes.is_empty() && c.virtual_servers.is_empty() {
        path == super::DEFAULT_PATH
    } else {
        c.routes.iter().any(|x| x.path == path)
    };
    let vs = c.virtual_servers.iter().find(|v| v.path == path);
    let prefixes = |vs: &super::federation::VirtualServerConfig| {
        vs.members
            .iter()
            .map(|m| m.prefix())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (vs, member) {
        _ if path.is_empty() => errs.push(&at.key("path"), "is required"),
        (Some(vs), None) => errs.push(
            &at.key("member"),
            format!(
                "is required: {path:?} is a virtual server; name the member (one of: {})",
                prefixes(vs)
            ),
        ),
        (Some(vs), Some(m)) if !vs.members.iter().any(|x| x.prefix() == m) => errs.push(
            &at.key("member"),
            format!(
                "{m:?} is not a member of {path:?} (its members' prefixes: {})",
                prefixes(vs)
            ),
        ),
        (Some(_), Some(_)) => {}
        (None, Some(_)) if route => errs.push(
            &at.key("member"),
            format!("{path:?} is a route: members belong to virtual servers (leave member out)"),
        ),
        (None, _) if !route => errs.push(
            &at.key("path"),
            format!("{path:?} is not a configured route's or virtual server's path"),
        ),
        (None, _) => {}
    }
}

/// The rules' name of a cache or transform entry: the route's path, or a member's
/// `path#prefix` (a `#` cannot occur in a request path).
pub fn scope_name(path: &str, member: Option<&str>) -> String {
    match member {
        Some(m) => format!("{path}#{m}"),
        None => path.to_string(),
    }
}
