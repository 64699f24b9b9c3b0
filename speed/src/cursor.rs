//! Exact positioning: deliver every offset of a partition exactly once from a
//! stored position, whatever the broker does with a fetch that starts inside
//! a record batch.
//!
//! Kafka answers a fetch at offset X with the whole batch containing X (the
//! client drops the records below X). Tansu 0.6.0 instead answers from the
//! first batch whose base offset is >= X: records between X and that base are
//! skipped, and an X inside the last batch gets no answer at all (checked
//! with librdkafka 2.16: records 150..199 never arrive after a seek to 150
//! when batches start at 100 and 200). Either would break the speed layer's
//! exactly-once invariant, silently.
//!
//! So a [`Cursor`] never trusts a seek. It starts `REWIND` offsets early,
//! drops records below the expected offset, and if the first record after a
//! seek is past the expected offset (the broker skipped), or nothing arrives
//! while the partition's high watermark is ahead, it seeks further back, down
//! to the log start. Only a gap that remains with the seek at the log start
//! (data deleted by retention) is accepted, loudly. Against Kafka the cost is
//! re-reading at most `REWIND` records per partition on each start.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::SpeedError;

/// How far before the stored offset a resume starts reading (larger than a
/// producer batch normally holds).
pub const REWIND: i64 = 10_000;
/// How long a resuming partition may stay silent before it is probed. A
/// busy machine's first fetch after a seek can take over 500 ms, which was
/// taken for a skip and re-read further back (docs/benchmarks.md, batch
/// swaps); a real skip only costs this much delay.
const SILENCE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    /// Sought to `from` at `since`; `seen` once any record arrived since.
    Resuming {
        from: i64,
        since: Instant,
        seen: bool,
    },
}

/// What to do with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next expected offset: apply it.
    Accept,
    /// Already applied (below the expected offset): drop it.
    Skip,
}

/// Per-partition positions of one topic.
#[derive(Debug)]
pub struct Cursor {
    topic: String,
    partitions: HashMap<i32, (i64, State)>,
    rewind: i64,
    /// Offsets accepted as lost (a gap that survived a seek to the log start).
    pub lost: u64,
}

impl Cursor {
    /// A cursor delivering each of `partitions` from `next[p]` (0 when
    /// absent). Assign the consumer at [`Cursor::assignment`]'s offsets.
    pub fn new(
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
        next: &HashMap<i32, i64>,
    ) -> Cursor {
        let now = Instant::now();
        let partitions = partitions
            .into_iter()
            .map(|p| {
                let expected = next.get(&p).copied().unwrap_or(0);
                let from = (expected - REWIND).max(0);
                (
                    p,
                    (
                        expected,
                        State::Resuming {
                            from,
                            since: now,
                            seen: false,
                        },
                    ),
                )
            })
            .collect();
        Cursor {
            topic: topic.to_string(),
            partitions,
            rewind: REWIND,
            lost: 0,
        }
    }

    /// Starts `rewind` (instead of [`REWIND`]) before each expected offset
    /// and escalates from there (tests use small values).
    pub fn with_rewind(mut self, rewind: i64) -> Cursor {
        self.rewind = rewind.max(1);
        for (expected, state) in self.partitions.values_mut() {
            if let State::Resuming { from, .. } = state {
                *from = (*expected - self.rewind).max(0);
            }
        }
        self
    }

    /// Where to assign each partition: `REWIND` before its expected offset.
    pub fn assignment(&self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .map(|(p, (expected, state))| match state {
                State::Resuming { from, .. } => (*p, *from),
                State::Live => (*p, *expected),
            })
            .collect();
        out.sort();
        out
    }

    /// Assigns `consumer` to its partitions at [`Cursor::assignment`].
    pub fn assign(&self, consumer: &BaseConsumer) -> Result<(), SpeedError> {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (p, from) in self.assignment() {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(from))
                .map_err(SpeedError::kafka("building the assignment"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(SpeedError::kafka(format!("assigning {}", self.topic)))
    }

    /// The partition's first offset still in the log.
    fn log_start(&self, consumer: &BaseConsumer, p: i32) -> Result<i64, SpeedError> {
        let (low, _) = consumer
            .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
            .map_err(SpeedError::kafka(format!(
                "watermarks of {}:{p}",
                self.topic
            )))?;
        Ok(low)
    }

    fn seek(&mut self, consumer: &BaseConsumer, p: i32, from: i64) -> Result<(), SpeedError> {
        let entry = self.partitions.entry(p).or_insert((0, State::Live));
        entry.1 = State::Resuming {
            from,
            since: Instant::now(),
            seen: false,
        };
        consumer
            .seek(
                &self.topic,
                p,
                Offset::Offset(from),
                Duration::from_secs(10),
            )
            .map_err(SpeedError::kafka(format!(
                "seeking {}:{p} to {from}",
                self.topic
            )))
    }

    /// Judges a record; may seek the consumer back when the broker skipped.
    pub fn check(
        &mut self,
        consumer: &BaseConsumer,
        p: i32,
        offset: i64,
    ) -> Result<Verdict, SpeedError> {
        let Some(&(expected, state)) = self.partitions.get(&p) else {
            return Ok(Verdict::Skip);
        };
        if offset < expected {
            if let Some((_, State::Resuming { seen, .. })) = self.partitions.get_mut(&p) {
                *seen = true;
            }
            return Ok(Verdict::Skip);
        }
        if offset == expected {
            self.partitions.insert(p, (offset + 1, State::Live));
            return Ok(Verdict::Accept);
        }
        // offset > expected: records were skipped.
        let from = match state {
            State::Resuming { from, .. } => from,
            State::Live => expected,
        };
        let low = self.log_start(consumer, p)?;
        if from <= low {
            tracing::error!(
                topic = %self.topic, partition = p, expected, got = offset, log_start = low,
                "offsets missing from the log (deleted by retention?); continuing after the gap"
            );
            self.lost += (offset - expected) as u64;
            self.partitions.insert(p, (offset + 1, State::Live));
            return Ok(Verdict::Accept);
        }
        let further = (from - (expected - from).max(self.rewind)).max(low);
        tracing::warn!(
            topic = %self.topic, partition = p, expected, got = offset, seek = further,
            "broker skipped offsets after a seek; reading from further back"
        );
        self.seek(consumer, p, further)?;
        Ok(Verdict::Skip)
    }

    /// Probes resuming partitions from which nothing at all arrived since
    /// their seek: read from further back, down to the log start.
    ///
    /// On Kafka a seek below the high watermark always returns records, so
    /// this only acts where a broker answered a fetch inside a batch with
    /// nothing (Tansu 0.6.0 does, and its high watermark then reads as the
    /// last batch's base offset + 1, so watermarks cannot be trusted here).
    pub fn probe_silent(&mut self, consumer: &BaseConsumer) -> Result<(), SpeedError> {
        let silent: Vec<(i32, i64, i64)> = self
            .partitions
            .iter()
            .filter_map(|(p, (expected, state))| match state {
                State::Resuming {
                    from,
                    since,
                    seen: false,
                } if *from > 0 && since.elapsed() >= SILENCE => Some((*p, *expected, *from)),
                _ => None,
            })
            .collect();
        for (p, expected, from) in silent {
            let low = self.log_start(consumer, p)?;
            if from > low {
                let further = (from - (expected - from).max(self.rewind)).max(low);
                tracing::warn!(topic = %self.topic, partition = p, expected, seek = further, "no data after a seek; reading from further back");
                self.seek(consumer, p, further)?;
            } else if let Some(entry) = self.partitions.get_mut(&p) {
                // At the log start: wait for the broker.
                entry.1 = State::Resuming {
                    from,
                    since: Instant::now(),
                    seen: false,
                };
            }
        }
        Ok(())
    }
}
