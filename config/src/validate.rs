//! What types cannot check: limits, scopes, unique names and keys.

use std::collections::HashSet;

use crate::error::invalid;
use crate::{ConfigError, Scope, WeftConfig};

impl WeftConfig {
    /// Checks every section; the error names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.serve;
        for (key, v) in [
            ("kafka.partitions", u64::from(self.kafka.partitions)),
            ("speed.max_batch", self.speed.max_batch as u64),
            ("speed.max_batch_wait_ms", self.speed.max_batch_wait_ms),
            ("archive.max_rows", self.archive.max_rows as u64),
            ("archive.max_delay_ms", self.archive.max_delay_ms),
            ("batch.memory_mb", self.batch.memory_mb as u64),
            ("batch.keep", self.batch.keep as u64),
            (
                "batch.cooc_window_min",
                self.batch.cooc_window_min.max(0) as u64,
            ),
            ("batch.neighbours", self.batch.neighbours as u64),
            ("serve.max_in_flight", s.max_in_flight as u64),
            ("serve.max_batch_ids", s.max_batch_ids as u64),
            ("serve.max_id_bytes", s.max_id_bytes as u64),
            (
                "serve.max_recommendations",
                u64::from(s.max_recommendations),
            ),
            ("serve.default_deadline_ms", s.default_deadline_ms),
            (
                "serve.collector_max_body_kb",
                s.collector_max_body_kb as u64,
            ),
            ("serve.collector_max_events", s.collector_max_events as u64),
            ("serve.collector_events_per_sec", s.collector_events_per_sec),
            ("serve.ops_sample_secs", s.ops_sample_secs),
            ("views.poll_secs", self.views.poll_secs),
            (
                "cluster.executor_timeout_secs",
                self.cluster.executor_timeout_secs,
            ),
            (
                "cluster.task_max_failures",
                self.cluster.task_max_failures as u64,
            ),
            ("cluster.memory_mb", self.cluster.memory_mb as u64),
            ("cluster.heartbeat_secs", self.cluster.heartbeat_secs),
            (
                "cluster.connect_timeout_secs",
                self.cluster.connect_timeout_secs,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        for (key, v) in [
            ("kafka.bootstrap", &self.kafka.bootstrap),
            ("kafka.topic", &self.kafka.topic),
            ("kafka.dead_letter_topic", &self.kafka.dead_letter_topic),
            ("speed.group_id", &self.speed.group_id),
            ("archive.root", &self.archive.root),
            ("archive.group_id", &self.archive.group_id),
            ("cluster.host", &self.cluster.host),
        ] {
            if v.trim().is_empty() {
                return Err(invalid(key, "is empty"));
            }
        }
        if let Some(url) = &self.cluster.scheduler {
            crate::parse_scheduler(url).map_err(|e| invalid("cluster.scheduler", e))?;
        }
        if self.kafka.topic == self.kafka.dead_letter_topic {
            return Err(invalid(
                "kafka.dead_letter_topic",
                format!("is the events topic {:?}", self.kafka.topic),
            ));
        }
        if self
            .views
            .store
            .as_deref()
            .is_some_and(|v| v.trim().is_empty())
        {
            return Err(invalid(
                "views.store",
                "is empty (leave it unset for no view store)",
            ));
        }
        self.shard()?;
        self.validate_tenants()
    }

    fn validate_tenants(&self) -> Result<(), ConfigError> {
        let mut tenants = HashSet::new();
        let mut names = HashSet::new();
        let mut secrets = HashSet::new();
        for (t, tenant) in self.tenants.iter().enumerate() {
            let at = format!("tenants[{t}]");
            if tenant.name.is_empty() {
                return Err(invalid(format!("{at}.name"), "is empty"));
            }
            if !tenants.insert(tenant.name.as_str()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("tenant {:?} is configured twice", tenant.name),
                ));
            }
            for (o, origin) in tenant.allowed_origins.iter().enumerate() {
                if !(origin.starts_with("http://") || origin.starts_with("https://"))
                    || origin.ends_with('/')
                {
                    return Err(invalid(
                        format!("{at}.allowed_origins[{o}]"),
                        format!("{origin:?} is not an origin like https://shop.example"),
                    ));
                }
            }
            for (k, key) in tenant.keys.iter().enumerate() {
                let at = format!("{at}.keys[{k}]");
                if !names.insert(key.name.as_str()) {
                    return Err(invalid(
                        format!("{at}.name"),
                        format!("key name {:?} is used twice", key.name),
                    ));
                }
                let secret = key.secret().map_err(|p| invalid(format!("{at}.key"), p))?;
                if secret.expose().len() < 16 {
                    return Err(invalid(
                        format!("{at}.key"),
                        "is shorter than 16 characters",
                    ));
                }
                if !secrets.insert(secret.expose().to_string()) {
                    return Err(invalid(
                        format!("{at}.key"),
                        "the same key is configured twice",
                    ));
                }
                if key.scopes.is_empty() {
                    return Err(invalid(format!("{at}.scopes"), "is empty"));
                }
                for (i, scope) in key.scopes.iter().enumerate() {
                    let parsed = Scope::parse(scope).ok_or_else(|| {
                        invalid(
                            format!("{at}.scopes[{i}]"),
                            format!(
                                "unknown scope {scope:?} (expected profile:read, recommendations:read, events:write or admin)"
                            ),
                        )
                    })?;
                    if key.publishable
                        && !matches!(parsed, Scope::RecommendationsRead | Scope::EventsWrite)
                    {
                        return Err(invalid(
                            format!("{at}.scopes[{i}]"),
                            "a publishable (widget) key may only have recommendations:read and events:write",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
