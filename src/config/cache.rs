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
    /// What one route keeps.
    pub struct CacheRouteConfig {
        /// A configured route's path.
        path: String = String::new(),
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
        let served = if c.routes.is_empty() && c.virtual_servers.is_empty() {
            r.path == super::DEFAULT_PATH
        } else {
            c.routes.iter().any(|x| x.path == r.path)
        };
        if r.path.is_empty() {
            errs.push(&rp.key("path"), "is required");
        } else if c.virtual_servers.iter().any(|v| v.path == r.path) {
            errs.push(
                &rp.key("path"),
                format!(
                    "{:?} is a virtual server; caching applies to routes (to one group) only",
                    r.path
                ),
            );
        } else if !served {
            errs.push(
                &rp.key("path"),
                format!("{:?} is not a configured route's path", r.path),
            );
        }
        if cache.routes[..i].iter().any(|x| x.path == r.path) {
            errs.push(&rp.key("path"), format!("{:?} is listed twice", r.path));
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
