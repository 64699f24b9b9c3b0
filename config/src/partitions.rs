//! [`PartitionSet`]: a set of a Kafka topic's partitions, as a serving
//! shard's assignment is written (`serve.partitions = "0-3,8"`, or
//! `serve.shard = "1/4"`).

/// A set of a topic's partitions: what a serving shard owns, written as
/// ranges (`0-3,8,10-11`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct PartitionSet(std::collections::BTreeSet<i32>);

impl PartitionSet {
    /// Every partition of a topic of `partitions`.
    pub fn all(partitions: u32) -> PartitionSet {
        PartitionSet((0..partitions as i32).collect())
    }

    /// Parses `0-3,8,10-11` (ranges inclusive, in any order, no repeats).
    pub fn parse(text: &str) -> Result<PartitionSet, String> {
        let mut set = std::collections::BTreeSet::new();
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= i32::MAX as u32)
                .map(|n| n as i32)
                .ok_or_else(|| format!("'{}' is not a partition number", s.trim()))
        };
        for part in text.split(',') {
            if part.trim().is_empty() {
                return Err(format!("'{text}': expected partitions like 0-3,8"));
            }
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => {
                    let n = number(part)?;
                    (n, n)
                }
            };
            if first > last {
                return Err(format!("'{}': a range runs upwards", part.trim()));
            }
            for p in first..=last {
                if !set.insert(p) {
                    return Err(format!("partition {p} is named twice in '{text}'"));
                }
            }
        }
        Ok(PartitionSet(set))
    }

    /// Shard `index` of `shards` (counted from 0) of a topic of
    /// `partitions`: the `index`-th of `shards` contiguous ranges, as even
    /// as they divide (`shard(1, 3, 8)` is 2-4).
    pub fn shard(index: u32, shards: u32, partitions: u32) -> Result<PartitionSet, String> {
        if shards == 0 || index >= shards {
            return Err(format!(
                "shard {index}/{shards}: the index counts from 0 and is below the number of shards"
            ));
        }
        if shards > partitions {
            return Err(format!(
                "{shards} shards of {partitions} partitions: a shard owns at least one partition"
            ));
        }
        let bound = |i: u32| (u64::from(i) * u64::from(partitions) / u64::from(shards)) as i32;
        Ok(PartitionSet((bound(index)..bound(index + 1)).collect()))
    }

    /// Parses a shard written `index/shards` (see [`PartitionSet::shard`]).
    pub fn parse_shard(text: &str, partitions: u32) -> Result<PartitionSet, String> {
        let parsed = text
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        let Some((index, shards)) = parsed else {
            return Err(format!("'{text}': expected index/shards, like 2/4"));
        };
        PartitionSet::shard(index, shards, partitions)
    }

    pub fn contains(&self, partition: i32) -> bool {
        self.0.contains(&partition)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The partitions, ascending.
    pub fn iter(&self) -> impl Iterator<Item = i32> + '_ {
        self.0.iter().copied()
    }

    /// The partitions at or above `partitions` (not in a topic of that
    /// many).
    pub fn beyond(&self, partitions: u32) -> PartitionSet {
        PartitionSet(
            self.0
                .range(partitions.min(i32::MAX as u32) as i32..)
                .copied()
                .collect(),
        )
    }

    /// Whether every partition of a topic of `partitions` is in the set.
    pub fn covers(&self, partitions: u32) -> bool {
        (0..partitions as i32).all(|p| self.contains(p))
    }

    pub fn union(&self, other: &PartitionSet) -> PartitionSet {
        PartitionSet(self.0.union(&other.0).copied().collect())
    }

    pub fn intersection(&self, other: &PartitionSet) -> PartitionSet {
        PartitionSet(self.0.intersection(&other.0).copied().collect())
    }

    /// The partitions of a topic of `partitions` not in the set.
    pub fn missing(&self, partitions: u32) -> PartitionSet {
        PartitionSet(
            (0..partitions as i32)
                .filter(|p| !self.contains(*p))
                .collect(),
        )
    }
}

impl FromIterator<i32> for PartitionSet {
    fn from_iter<I: IntoIterator<Item = i32>>(iter: I) -> PartitionSet {
        PartitionSet(iter.into_iter().collect())
    }
}

/// Written as [`PartitionSet::parse`] reads it, runs as ranges.
impl std::fmt::Display for PartitionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        let mut it = self.0.iter().copied().peekable();
        while let Some(start) = it.next() {
            let mut end = start;
            while it.peek() == Some(&(end + 1)) {
                end += 1;
                it.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn partition_sets_parse_and_print_as_ranges() {
        let set = PartitionSet::parse("10-11, 0-3,8").unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(set.to_string(), "0-3,8,10-11");
        assert_eq!(PartitionSet::parse(&set.to_string()).unwrap(), set);
        assert_eq!(set.missing(12).to_string(), "4-7,9");
        assert_eq!(set.beyond(10).to_string(), "10-11");
        assert!(!set.covers(12) && PartitionSet::all(4).covers(4));
        for (bad, says) in [
            ("", "expected partitions"),
            ("1,,2", "expected partitions"),
            ("a", "'a' is not a partition number"),
            ("-1", "'' is not a partition number"),
            ("5-2", "runs upwards"),
            ("0-3,2", "partition 2 is named twice"),
        ] {
            let e = PartitionSet::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn shards_split_the_partitions_in_contiguous_ranges() {
        let shards: Vec<String> = (0..3)
            .map(|i| PartitionSet::shard(i, 3, 8).unwrap().to_string())
            .collect();
        assert_eq!(shards, ["0-1", "2-4", "5-7"]);
        let all = (0..5).fold(PartitionSet::default(), |acc, i| {
            let s = PartitionSet::shard(i, 5, 64).unwrap();
            assert!(acc.intersection(&s).is_empty());
            acc.union(&s)
        });
        assert!(all.covers(64) && all.len() == 64);
        assert_eq!(
            PartitionSet::parse_shard("1/2", 8).unwrap().to_string(),
            "4-7"
        );
        for (bad, says) in [
            ("2/2", "counts from 0"),
            ("0/9", "at least one partition"),
            ("1", "expected index/shards"),
            ("a/2", "expected index/shards"),
        ] {
            let e = PartitionSet::parse_shard(bad, 8).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
