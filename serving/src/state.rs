//! What a request reads: the (batch view, speed generation) pair, swapped
//! atomically, and the merge `profile = batch vN ⊕ speed generation N`.
//!
//! Generation N of the speed view holds exactly the events after view N's
//! boundary (`docs/semantics.md`), so the merge is a plain union of the
//! user's partials from both stores, evaluated once. A request loads the
//! pair once and reads both stores through it; a swap never changes what a
//! request in flight sees (the speed layer keeps the previous generation
//! until the next switch).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwapOption;
use weft_core::FeatureSpec;
use weft_core::agg::FeatureValue;
use weft_core::eval::{StoredPartials, Values};
use weft_core::segment::segment_indices;
use weft_proto::v1;
use weft_speed::consumer::SpeedMetrics;
use weft_speed::store::{Generation, SpeedStore};
use weft_view::OpenedView;

use crate::error::ApiError;

/// The token the collector answers with and reads take as `after`:
/// `partition:offset` of the newest accepted event per partition, joined
/// by commas.
pub fn read_after_token(positions: &std::collections::BTreeMap<i32, i64>) -> String {
    positions
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a [`read_after_token`]; what is wrong with it otherwise.
pub fn parse_read_after(token: &str) -> Result<Vec<(i32, i64)>, String> {
    token
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (p, o) = pair
                .split_once(':')
                .ok_or_else(|| format!("{:?} is not partition:offset", truncate(pair, 32)))?;
            match (p.parse::<i32>(), o.parse::<i64>()) {
                (Ok(p), Ok(o)) if p >= 0 && o >= 0 => Ok((p, o)),
                _ => Err(format!("{:?} is not partition:offset", truncate(pair, 32))),
            }
        })
        .collect()
}

/// A batch view and the speed generation built from its boundary.
#[derive(Debug)]
pub struct Pair {
    /// None before any batch view (then generation 0 holds everything).
    pub view: Option<Arc<OpenedView>>,
    pub generation: Generation,
    batch_offsets: Vec<v1::PartitionOffset>,
}

impl Pair {
    pub fn new(view: Option<Arc<OpenedView>>, generation: Generation) -> Pair {
        let batch_offsets = view
            .as_ref()
            .map(|v| {
                v.manifest()
                    .boundary
                    .offsets
                    .iter()
                    .map(|(p, o)| v1::PartitionOffset {
                        partition: *p,
                        offset: *o,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Pair {
            view,
            generation,
            batch_offsets,
        }
    }

    pub fn view_version(&self) -> u64 {
        self.view.as_ref().map_or(0, |v| v.manifest().version)
    }
}

/// A profile as served.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub found: bool,
    /// The values of the features asked for, indexed like `spec.features`.
    pub values: Values,
    /// The spec's segments the profile is in, as positions in
    /// `spec.segments`.
    pub segments: Vec<usize>,
}

impl Served {
    /// The value of feature `index` (a position in the spec).
    pub fn value(&self, index: usize) -> Option<&FeatureValue> {
        self.values.get(index)?.as_ref()
    }
}

/// The serving state shared by both APIs.
pub struct Serving {
    spec: Arc<FeatureSpec>,
    /// Features the segments read (evaluated even when not requested).
    segment_features: Vec<usize>,
    /// Positions of the spec's features in name order.
    by_name: Vec<usize>,
    speed: Arc<SpeedStore>,
    speed_metrics: Arc<SpeedMetrics>,
    pair: ArcSwapOption<Pair>,
    /// Σ (high watermark − position), refreshed in the background.
    lag_messages: AtomicI64,
    /// When the ends `lag_messages` counts up to were read (0: not yet):
    /// stored after the lag and read before it, so a reply never states a
    /// newer time than its lag's ends.
    lag_as_of_ms: AtomicI64,
    /// The topic's partition count and the partitions this node owns, for
    /// every reply's freshness.
    topic_partitions: i32,
    owned: Vec<i32>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field(
                "pair",
                &self
                    .pair
                    .load()
                    .as_ref()
                    .map(|p| (p.view_version(), p.generation)),
            )
            .finish_non_exhaustive()
    }
}

pub use weft_core::time::now_ms;

impl Serving {
    pub fn new(speed: Arc<SpeedStore>, speed_metrics: Arc<SpeedMetrics>) -> Serving {
        let spec = speed.spec().clone();
        let mut segment_features: Vec<usize> = spec
            .segments
            .iter()
            .flat_map(|s| &s.all)
            .filter_map(|p| spec.feature_index(&p.feature))
            .collect();
        segment_features.sort_unstable();
        segment_features.dedup();
        let mut by_name: Vec<usize> = (0..spec.features.len()).collect();
        by_name.sort_by(|&a, &b| spec.features[a].name.cmp(&spec.features[b].name));
        Serving {
            spec,
            segment_features,
            by_name,
            speed,
            speed_metrics,
            pair: ArcSwapOption::empty(),
            lag_messages: AtomicI64::new(0),
            lag_as_of_ms: AtomicI64::new(0),
            topic_partitions: 0,
            owned: Vec::new(),
        }
    }

    /// States in every freshness that this node owns `owned` of the
    /// topic's `topic` partitions.
    pub fn with_partitions(mut self, topic: u32, owned: impl IntoIterator<Item = i32>) -> Serving {
        self.topic_partitions = topic as i32;
        self.owned = owned.into_iter().collect();
        self
    }

    pub fn spec(&self) -> &Arc<FeatureSpec> {
        &self.spec
    }

    pub fn speed(&self) -> &Arc<SpeedStore> {
        &self.speed
    }

    pub fn speed_metrics(&self) -> &Arc<SpeedMetrics> {
        &self.speed_metrics
    }

    /// The pair requests read, or UNAVAILABLE while there is no consistent
    /// one (at start, until the speed generation of the served view is
    /// ready).
    pub fn pair(&self) -> Result<Arc<Pair>, ApiError> {
        self.pair.load_full().ok_or_else(|| {
            ApiError::Unavailable(
                "warming up: no batch view and speed generation pair is ready yet".into(),
            )
        })
    }

    pub fn current_pair(&self) -> Option<Arc<Pair>> {
        self.pair.load_full()
    }

    /// Makes `pair` the one new requests read; requests in flight keep the
    /// one they loaded.
    pub fn switch(&self, pair: Pair) {
        tracing::info!(
            view = pair.view_version(),
            generation = pair.generation,
            "serving a new (batch view, speed generation) pair"
        );
        self.pair.store(Some(Arc::new(pair)));
    }

    /// Positions in the spec of the named features (empty: all). Unknown
    /// names are INVALID_ARGUMENT.
    pub fn select(&self, names: &[String]) -> Result<Option<Vec<usize>>, ApiError> {
        if names.is_empty() {
            return Ok(None);
        }
        if names.len() > self.spec.features.len() * 4 {
            return Err(ApiError::InvalidArgument(format!(
                "{} feature names; the spec has {} features",
                names.len(),
                self.spec.features.len()
            )));
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let i = self.spec.feature_index(name).ok_or_else(|| {
                ApiError::InvalidArgument(format!("unknown feature {:?}", truncate(name, 64)))
            })?;
            if !out.contains(&i) {
                out.push(i);
            }
        }
        Ok(Some(out))
    }

    /// The index of a feature of the spec.
    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.spec.feature_index(name)
    }

    /// A user's partials from both stores of `pair` that the windows
    /// cover at `t_ms` ([`StoredPartials::at`]).
    pub fn partials<'p>(
        &'p self,
        pair: &'p Pair,
        tenant: &str,
        user: &str,
        t_ms: i64,
    ) -> Result<StoredPartials<'p>, ApiError> {
        let mut parts = match &pair.view {
            Some(view) => view.user_partials(tenant, user, Some(t_ms))?,
            None => StoredPartials::at(&self.spec, Some(t_ms)),
        };
        self.speed
            .add_user_partials(&mut parts, pair.generation, tenant, user)?;
        Ok(parts)
    }

    /// `batch ⊕ speed` for one user at `t_ms`.
    pub fn profile(
        &self,
        pair: &Pair,
        tenant: &str,
        user: &str,
        t_ms: i64,
        features: Option<&[usize]>,
    ) -> Result<Served, ApiError> {
        let parts = self.partials(pair, tenant, user, t_ms)?;
        Ok(self.evaluate(parts, t_ms, features))
    }

    /// Evaluates a user's partials read for `t_ms` ([`Serving::partials`])
    /// into what is served: the features at `features` (None: all) and
    /// the segments.
    pub fn evaluate(
        &self,
        parts: StoredPartials<'_>,
        t_ms: i64,
        features: Option<&[usize]>,
    ) -> Served {
        let found = parts.found();
        let Some(selected) = features else {
            let values = parts.into_values(t_ms, None);
            let segments = segment_indices(&self.spec, &values);
            return Served {
                found,
                values,
                segments,
            };
        };
        // Evaluate what the segments read too, then keep what was asked.
        let mut needed = selected.to_vec();
        needed.extend(
            self.segment_features
                .iter()
                .filter(|i| !selected.contains(i)),
        );
        let mut values = parts.into_values(t_ms, Some(&needed));
        let segments = segment_indices(&self.spec, &values);
        for &i in &needed[selected.len()..] {
            values[i] = None;
        }
        Served {
            found,
            values,
            segments,
        }
    }

    /// The spec's features in name order, the order of a reply's map.
    pub fn by_name(&self) -> &[usize] {
        &self.by_name
    }

    /// Recomputes the speed lag from the consumer's counters. The ends'
    /// time is read first: the ends used are at least that new (the
    /// poller stores them before their time).
    pub fn refresh_lag(&self) {
        let as_of = self.speed_metrics.ends_as_of_ms.load(Ordering::Acquire);
        let positions = self.speed_metrics.positions();
        let lag: i64 = self
            .speed_metrics
            .high_watermarks()
            .iter()
            .map(|(p, high)| (high - positions.get(p).copied().unwrap_or(0)).max(0))
            .sum();
        self.lag_messages.store(lag, Ordering::Relaxed);
        self.lag_as_of_ms.store(as_of, Ordering::Release);
    }

    /// Waits (up to `max`) until the speed layer has applied every
    /// position of `after` (partition, offset) that this node consumes:
    /// read-your-writes for a page that just sent events through the
    /// collector ([`read_after_token`]). Partitions it does not consume
    /// are not waited for. While a speed generation is being built (after
    /// a batch view lands) the served pair does not take new events, so
    /// it also waits for the switch to the new pair.
    pub async fn wait_applied(&self, after: &[(i32, i64)], max: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            // The positions are the generation consumed: while one is being
            // built, the served one does not move, so wait for the switch.
            let m = &self.speed_metrics;
            let ready = m.ready_generation.load(Ordering::Acquire);
            let settled = m.building_generation.load(Ordering::Acquire) == 0
                && self
                    .current_pair()
                    .is_some_and(|p| u64::from(p.generation) == ready);
            let positions = m.positions();
            let done = settled
                && after
                    .iter()
                    .all(|(p, o)| positions.get(p).is_none_or(|next| *next > *o));
            if done {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// True once the lag is known: the partitions' ends have been read
    /// since the node started.
    pub fn lag_known(&self) -> bool {
        self.lag_as_of_ms.load(Ordering::Acquire) > 0
    }

    pub fn lag_messages(&self) -> i64 {
        self.lag_messages.load(Ordering::Relaxed)
    }

    /// Age of the newest applied event (0 before any).
    pub fn lag_ms(&self, now: i64) -> i64 {
        let newest = self.speed_metrics.newest_event_ms.load(Ordering::Relaxed);
        if newest <= 0 {
            0
        } else {
            (now - newest).max(0)
        }
    }

    /// How current an answer read from `pair` at `as_of` is.
    pub fn freshness(&self, pair: &Pair, as_of: i64) -> v1::Freshness {
        // The time first, then the lag (see `lag_as_of_ms`).
        let lag_as_of = self.lag_as_of_ms.load(Ordering::Acquire);
        let lag = self.lag_messages();
        let created = pair.view.as_ref().map_or(0, |v| v.manifest().created_ms);
        v1::Freshness {
            batch_view_version: pair.view_version(),
            batch_view_created_ms: created,
            batch_view_age_ms: if created > 0 {
                (as_of - created).max(0)
            } else {
                0
            },
            batch_offsets: pair.batch_offsets.clone(),
            speed_generation: u64::from(pair.generation),
            speed_lag_messages: lag,
            speed_lag_ms: self.lag_ms(as_of),
            as_of_ms: as_of,
            speed_lag_as_of_ms: lag_as_of,
            topic_partitions: self.topic_partitions,
            owned_partitions: self.owned.clone(),
        }
    }
}

/// At most `n` bytes of `s`, on a character boundary (for error messages
/// quoting client input).
pub fn truncate(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A core feature value in the wire format (moved, not copied).
pub fn to_proto(v: FeatureValue) -> v1::FeatureValue {
    use v1::feature_value::Value;
    let value = match v {
        FeatureValue::Int(i) => Value::IntValue(i),
        FeatureValue::Float(f) => Value::FloatValue(f),
        FeatureValue::Str(s) => Value::StringValue(s),
        FeatureValue::List(values) => Value::StringList(v1::StringList { values }),
        FeatureValue::Ranked(r) => Value::RankedList(v1::RankedList {
            entries: r
                .into_iter()
                .map(|(value, count)| v1::RankedEntry { value, count })
                .collect(),
        }),
    };
    v1::FeatureValue { value: Some(value) }
}

/// The wire value back in core form (clients and tests).
pub fn from_proto(v: &v1::FeatureValue) -> Option<FeatureValue> {
    use v1::feature_value::Value;
    Some(match v.value.as_ref()? {
        Value::IntValue(i) => FeatureValue::Int(*i),
        Value::FloatValue(f) => FeatureValue::Float(*f),
        Value::StringValue(s) => FeatureValue::Str(s.clone()),
        Value::StringList(l) => FeatureValue::List(l.values.clone()),
        Value::RankedList(r) => FeatureValue::Ranked(
            r.entries
                .iter()
                .map(|e| (e.value.clone(), e.count))
                .collect(),
        ),
    })
}
