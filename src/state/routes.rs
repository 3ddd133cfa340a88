//! Exact-path routes to upstream groups.

use crate::config::Config;
use crate::upstream::{Group, Groups};
use std::collections::HashMap;
use std::sync::Arc;

pub use crate::config::{DEFAULT_GROUP, DEFAULT_PATH};

/// A route: its path (shared, for labels and logs) and its group.
#[derive(Debug, Clone)]
pub struct Route {
    pub path: Arc<str>,
    pub group: Arc<Group>,
}

#[derive(Debug, Default)]
pub struct Routes(HashMap<String, Route>);

impl Routes {
    pub fn build(config: &Config, groups: &Groups) -> Result<Routes, String> {
        let mut map = HashMap::new();
        if config.routes.is_empty() && config.virtual_servers.is_empty() {
            let g = groups
                .get(DEFAULT_GROUP)
                .ok_or("no routes and no group named \"default\"")?;
            map.insert(
                DEFAULT_PATH.to_string(),
                Route {
                    path: DEFAULT_PATH.into(),
                    group: g.clone(),
                },
            );
        }
        for r in &config.routes {
            let g = groups
                .get(&r.group)
                .ok_or_else(|| format!("route {}: no group {:?}", r.path, r.group))?;
            map.insert(
                r.path.clone(),
                Route {
                    path: r.path.as_str().into(),
                    group: g.clone(),
                },
            );
        }
        Ok(Routes(map))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, path: &str) -> Option<&Route> {
        self.0.get(path)
    }
}
