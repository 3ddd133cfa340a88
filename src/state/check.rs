//! The checks of a config that need the runtime objects [`super::State`] is built from:
//! listener certificates read and parsed, server URLs parsed (and two servers of a group
//! at one address refused), auth keys decoded, CORS, policies and the edge compiled, the
//! Redis URL parsed. Nothing binds or connects. [`load`] reads a config and runs the
//! `config` module's checks and these in one pass, so every problem is listed with its
//! path: `--validate`, the start and a reload all go through it.

use crate::config::{self, Config, ConfigError};
use crate::security::{auth::Auth, cors::Cors, edge::Edge, policy::Policies};
use crate::upstream::target::Target;
use std::collections::HashSet;

/// Every problem [`super::State::build`] would find in `c`, each with its path.
pub fn check(c: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let mut push = |path: String, message: String| out.push(ConfigError { path, message });
    // The files are read and checked as the listener will read them.
    if let Some(Err(problems)) = c
        .server
        .tls
        .as_ref()
        .map(crate::security::tls::ListenerTls::load)
    {
        problems.into_iter().for_each(|(p, m)| push(p, m));
    }
    for (name, g) in &c.upstream.groups {
        let mut addresses = HashSet::new();
        for (i, s) in g.servers.iter().enumerate() {
            if s.url.is_empty() {
                continue; // `config` names it
            }
            let at = format!("upstream.groups.{name}.servers[{i}].url");
            match Target::from_url(&s.url) {
                Ok(t) if !addresses.insert(t.endpoint.clone()) => push(
                    at,
                    format!("another server of group {name:?} has the same address; each replica needs its own"),
                ),
                Ok(_) => {}
                Err(e) => push(at, e),
            }
        }
    }
    let built = [
        Cors::build(&c.security.cors).err(),
        Auth::build(&c.security).err(),
        Policies::build(&c.security.policies).err(),
        Edge::build(&c.server, &c.admin).err(),
    ];
    built
        .into_iter()
        .flatten()
        .flatten()
        .for_each(|(p, m)| push(p, m));
    if let Some(redis) = &c.cache.redis {
        if let Err(e) = crate::security::rate_limit::shared::describe_url(&redis.url) {
            push("cache.redis.url".into(), e);
        }
    }
    if let Err(problems) = super::transforms(c) {
        problems.into_iter().for_each(|(p, m)| push(p, m));
    }
    if let Err(problems) = crate::cache::Cache::build(c, None) {
        problems.into_iter().for_each(|(p, m)| push(p, m));
    }
    if let Some(url) = c.security.rate_limiting.redis_url() {
        if let Err(e) = crate::security::rate_limit::shared::describe_url(url) {
            push("security.rate_limiting.redis".into(), e);
        }
    }
    out
}

/// Read the config file at `path` (`None`: the embedded default config), with the
/// process's environment, and run every check. Returns the config and its text.
pub fn load(path: Option<&str>) -> Result<(Config, String), Vec<ConfigError>> {
    let text = match path {
        Some(p) => config::read_file(p)?,
        None => config::DEFAULT_CONFIG.to_string(),
    };
    let config = load_str(&text, &|k| std::env::var(k).ok())?;
    Ok((config, text))
}

/// Parse config text and run every check; `env` looks up environment variables.
pub fn load_str(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<ConfigError>> {
    config::load_str_and(text, env, &check)
}
