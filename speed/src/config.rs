//! The speed layer's and the archiver's settings, taken from the one
//! configuration tree (`weft-config`): `[kafka]` and `[speed]`, `[kafka]`
//! and `[archive]`.

use std::time::Duration;

use weft_config::WeftConfig;

use crate::archiver::ArchiverConfig;
use crate::consumer::SpeedConfig;

impl SpeedConfig {
    /// `weft speed` and the speed layer inside `weft serve`.
    pub fn from_config(c: &WeftConfig) -> SpeedConfig {
        let mut s = SpeedConfig::new(&c.kafka.bootstrap, c.speed.data_dir.clone());
        s.topic = c.kafka.topic.clone();
        s.dead_letter_topic = c.kafka.dead_letter_topic.clone();
        s.group_id = c.speed.group_id.clone();
        s.max_batch = c.speed.max_batch.max(1);
        s.max_batch_wait = Duration::from_millis(c.speed.max_batch_wait_ms.max(1));
        s.dedup_horizon = Duration::from_secs(c.speed.dedup_horizon_secs);
        s.sync_writes = c.speed.sync_writes;
        // A shard consumes its own partitions (`serve.partitions` or
        // `serve.shard`; a loaded config has been validated).
        s.partitions = c.shard().ok().flatten().map(|shard| shard.owned);
        s
    }
}

impl ArchiverConfig {
    /// `weft archive` and the archiver inside `weft up`.
    pub fn from_config(c: &WeftConfig) -> ArchiverConfig {
        let mut a = ArchiverConfig::new(&c.kafka.bootstrap, c.archive.root.as_str());
        a.s3 = c.s3.clone();
        a.topic = c.kafka.topic.clone();
        a.group_id = c.archive.group_id.clone();
        a.max_rows = c.archive.max_rows.max(1);
        a.max_delay = Duration::from_millis(c.archive.max_delay_ms.max(1));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_reach_the_runtime_configs() {
        let mut c = WeftConfig::default();
        c.kafka.bootstrap = "k:1".into();
        c.kafka.topic = "ev".into();
        c.speed.max_batch_wait_ms = 7;
        c.speed.dedup_horizon_secs = 60;
        c.archive.root = "/a".into();
        c.archive.max_rows = 9;
        let s = SpeedConfig::from_config(&c);
        assert_eq!(
            (
                s.bootstrap.as_str(),
                s.topic.as_str(),
                s.max_batch_wait,
                s.dedup_horizon
            ),
            (
                "k:1",
                "ev",
                Duration::from_millis(7),
                Duration::from_secs(60)
            )
        );
        let a = ArchiverConfig::from_config(&c);
        assert_eq!(
            (a.root.as_str(), a.topic.as_str(), a.max_rows),
            ("/a", "ev", 9)
        );
    }
}
