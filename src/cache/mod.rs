//! Response caching: answers to list, read and selected tool-call requests kept per
//! route and served again (docs/caching.md).
//!
//! * [`ask`]: one cacheable request looked up, and its miss led and kept (for a route
//!   or a virtual server's member);
//! * [`key`]: what makes two requests the same question (route, era, method, canonical
//!   params, scope);
//! * [`entry`]: what is kept of an answer (only complete successes) and the answer a
//!   hit gets (the client's own id, in its era);
//! * [`store`]: the memory level (size-weighted, per-entry expiry), concurrent misses
//!   coalesced into one upstream request, invalidation;
//! * [`redis`]: the optional second level every replica shares, and the channel that
//!   carries invalidations between them;
//! * [`notice`]: the upstream notifications that invalidate (`list_changed`,
//!   `resources/updated`), found in the streams the gateway relays;
//! * [`listen`]: the gateway's own `subscriptions/listen` to modern-era servers, so
//!   their list changes invalidate with no client stream open.
//!
//! [`Cache`] is part of the runtime state: the rules of the config it was built from
//! and the process's [`store::Store`], which outlives reloads (a reload drops the
//! entries of the routes it changes).

pub mod ask;
pub mod entry;
pub mod key;
pub mod listen;
pub mod notice;
pub mod redis;
pub mod store;

use crate::config::cache::CacheRouteConfig;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The list methods whose answers `lists` keeps.
pub const LIST_METHODS: &[&str] = &[
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
];

/// What one route keeps, compiled.
#[derive(Debug)]
struct RouteRules {
    lists: Option<Duration>,
    resources: Option<Duration>,
    tools: Option<(GlobSet, Vec<Duration>)>,
    /// The upstream group that answers (its notifications invalidate).
    group: String,
    /// The config it came from (a reload compares them).
    config: CacheRouteConfig,
}

/// The cache as one state sees it.
pub struct Cache {
    routes: HashMap<String, RouteRules>,
    store: Option<Arc<store::Store>>,
    /// Send `X-Cache: hit|miss`.
    pub x_cache: bool,
}

impl Cache {
    /// The rules of `config`, with the process's store: `previous`'s when there is one
    /// (a reload; the entries of routes whose rules changed are dropped), else a new one.
    pub fn build(
        config: &crate::config::Config,
        previous: Option<(&crate::config::Config, &Cache)>,
    ) -> Result<Cache, Vec<(String, String)>> {
        let cache = &config.cache;
        let mut problems = Vec::new();
        let mut routes = HashMap::new();
        for (i, r) in cache.routes.iter().enumerate() {
            let tools = if r.tools.is_empty() {
                None
            } else {
                let mut b = GlobSetBuilder::new();
                let mut ttls = Vec::new();
                for (j, t) in r.tools.iter().enumerate() {
                    match Glob::new(&t.name) {
                        Ok(g) => {
                            b.add(g);
                            ttls.push(t.ttl.0);
                        }
                        Err(e) => problems.push((
                            format!("cache.routes[{i}].tools[{j}].name"),
                            format!("{:?} is not a glob: {e}", t.name),
                        )),
                    }
                }
                match b.build() {
                    Ok(set) => Some((set, ttls)),
                    Err(e) => {
                        problems.push((format!("cache.routes[{i}].tools"), e.to_string()));
                        None
                    }
                }
            };
            let Some(group) = group_of(config, &r.path, r.member.as_deref()) else {
                continue; // `config` names it
            };
            routes.insert(
                crate::config::cache::scope_name(&r.path, r.member.as_deref()),
                RouteRules {
                    lists: r.lists.as_ref().map(|t| t.ttl.0),
                    resources: r.resources.as_ref().map(|t| t.ttl.0),
                    tools,
                    group,
                    config: r.clone(),
                },
            );
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let store = match previous.and_then(|(_, p)| p.store.clone()) {
            Some(s) => Some(s),
            None if routes.is_empty() && cache.redis.is_none() => None,
            None => Some(Arc::new(store::Store::new(cache)?)),
        };
        if let (Some(store), Some((_, old))) = (&store, previous) {
            for (name, rules) in &old.routes {
                let same = routes
                    .get(name)
                    .is_some_and(|now| now.config == rules.config && now.group == rules.group);
                if !same {
                    let purge = store::Purge {
                        route: Some(name.clone()),
                        ..Default::default()
                    };
                    store.purge(&purge, vec![rules.group.clone()]);
                }
            }
        }
        Ok(Cache {
            routes,
            store,
            x_cache: cache.x_cache_header,
        })
    }

    /// How long `method` (naming `name`) may be kept on `route` (`None`: not cached).
    pub fn ttl(&self, route: &str, method: &str, name: Option<&str>) -> Option<Duration> {
        let rules = self.routes.get(route)?;
        match method {
            "resources/read" => rules.resources,
            "tools/call" => {
                let (set, ttls) = rules.tools.as_ref()?;
                let first = set.matches(name?).into_iter().min()?;
                ttls.get(first).copied()
            }
            m if LIST_METHODS.contains(&m) => rules.lists,
            _ => None,
        }
    }

    /// Whether any route caches anything.
    pub fn is_enabled(&self) -> bool {
        !self.routes.is_empty()
    }

    /// Whether `route` caches anything.
    pub fn covers(&self, route: &str) -> bool {
        self.routes.contains_key(route)
    }

    /// The group answering a cached route or member (`path#prefix`).
    pub fn group(&self, route: &str) -> Option<&str> {
        self.routes.get(route).map(|r| r.group.as_str())
    }

    /// Whether a cached route or member is answered by `group`.
    pub fn keeps_group(&self, group: &str) -> bool {
        self.routes.values().any(|r| r.group == group)
    }

    /// The groups of the cached routes and members, each once.
    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for rules in self.routes.values() {
            if !out.contains(&rules.group) {
                out.push(rules.group.clone());
            }
        }
        out
    }

    /// The groups of the cached routes and members (each once), with the store their
    /// notifications invalidate: what [`listen`] listens to (`group`: a group by name).
    pub fn listened(
        &self,
        group: impl Fn(&str) -> Option<Arc<crate::upstream::Group>>,
    ) -> Vec<(Arc<store::Store>, Arc<crate::upstream::Group>)> {
        let Some(store) = &self.store else {
            return Vec::new();
        };
        self.groups()
            .iter()
            .filter_map(|name| group(name))
            .map(|g| (store.clone(), g))
            .collect()
    }

    pub fn store(&self) -> Option<&Arc<store::Store>> {
        self.store.as_ref()
    }
}

/// The group answering a cache entry's `path` (and `member`): the route's, or the
/// member's (`None`: neither exists; the config's checks name it).
fn group_of(config: &crate::config::Config, path: &str, member: Option<&str>) -> Option<String> {
    if let Some(m) = member {
        let vs = config.virtual_servers.iter().find(|v| v.path == path)?;
        let m = vs.members.iter().find(|x| x.prefix() == m)?;
        return Some(m.group.clone());
    }
    if config.routes.is_empty() && config.virtual_servers.is_empty() {
        return (path == crate::config::DEFAULT_PATH).then(|| crate::config::DEFAULT_GROUP.into());
    }
    let r = config.routes.iter().find(|r| r.path == path)?;
    Some(r.group.clone())
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(yaml: &str) -> Cache {
        let cfg = crate::config::load_str(yaml, &|_| None).unwrap();
        Cache::build(&cfg, None).unwrap()
    }

    const BASE: &str =
        "upstream: {groups: {default: {servers: [{id: a, url: 'http://127.0.0.1:1'}]}}}\n";

    #[test]
    fn rules_pick_what_is_cached() {
        let c = cache(&format!(
            "{BASE}cache:\n  routes:\n    - path: /mcp\n      lists: {{ttl: 30s}}\n      tools: [{{name: 'get_*', ttl: 5m}}, {{name: 'get_x', ttl: 1s}}]\n"
        ));
        assert!(c.is_enabled() && c.covers("/mcp") && c.store().is_some());
        assert_eq!(
            c.ttl("/mcp", "tools/list", None),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            c.ttl("/mcp", "server/discover", None),
            Some(Duration::from_secs(30))
        );
        assert_eq!(c.ttl("/mcp", "resources/read", Some("file:///a")), None);
        assert_eq!(
            c.ttl("/mcp", "tools/call", Some("get_x")),
            Some(Duration::from_secs(300))
        );
        assert_eq!(c.ttl("/mcp", "tools/call", Some("set_x")), None);
        assert_eq!(c.ttl("/mcp", "tools/call", None), None);
        assert_eq!(c.ttl("/mcp", "prompts/get", Some("p")), None);
        assert_eq!(c.ttl("/other", "tools/list", None), None);
    }

    #[test]
    fn a_members_rules_go_by_its_name_and_its_group() {
        let c = cache(
            "upstream: {groups: {a: {servers: [{id: a, url: 'http://127.0.0.1:1'}]}, b: {servers: [{id: b, url: 'http://127.0.0.1:2'}]}}}
virtual_servers: [{path: /all, members: [{group: a}, {group: b, prefix: bee}]}]
sessions: {keys: ['AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=']}
cache:
  routes:
    - {path: /all, member: bee, lists: {ttl: 30s}}
",
        );
        assert_eq!(
            c.ttl("/all#bee", "tools/list", None),
            Some(Duration::from_secs(30))
        );
        assert_eq!(c.ttl("/all", "tools/list", None), None);
        assert_eq!(c.ttl("/all#a", "tools/list", None), None);
        assert_eq!(c.group("/all#bee"), Some("b"));
        assert!(c.keeps_group("b") && !c.keeps_group("a"));
        assert_eq!(c.groups(), ["b"]);
    }

    #[test]
    fn no_routes_no_store() {
        let c = cache(BASE);
        assert!(!c.is_enabled());
        assert!(c.store().is_none());
    }

    #[test]
    fn bad_rules_are_named_by_path() {
        let cfg = format!(
            "{BASE}cache:\n  memory: {{max_size: 0}}\n  routes:\n    - path: /nope\n      lists: {{ttl: 0}}\n      tools: [{{name: '[', ttl: 1s}}, {{name: '', ttl: 0}}]\n    - path: /nope\n"
        );
        let errs = crate::config::load_str(&cfg, &|_| None).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let all = text.join("\n");
        for want in [
            "cache.memory.max_size",
            "cache.routes[0].path",
            "cache.routes[0].lists.ttl",
            "cache.routes[0].tools[0].name",
            "cache.routes[0].tools[1].name",
            "cache.routes[0].tools[1].ttl",
            "cache.routes[1].path",
        ] {
            assert!(all.contains(want), "{want} missing in:\n{all}");
        }
    }
}
