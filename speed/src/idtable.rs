//! The hash table behind a [`crate::store::DedupIndex`] shard: event-id
//! hashes to the Kafka time of their first delivery.
//!
//! Keys are already uniformly random (128 bits of XXH3), so a slot is the
//! key's low bits, with no hashing, and open addressing with linear probing
//! keeps a key, its time and the slot marker in one 24-byte entry. A lookup
//! in a large table is then usually one cache line, where a SwissTable
//! reads a control group and then the entry (two misses), and the line can
//! be asked for ahead of time ([`IdTable::prefetch`]).

/// One entry: the two halves of the key and the time; `ts_ms ==
/// EMPTY` marks a free slot (stored times are clamped above it).
#[derive(Debug, Clone, Copy)]
struct Slot {
    hi: u64,
    lo: u64,
    ts_ms: i64,
}

const EMPTY: i64 = i64::MIN;
const FREE: Slot = Slot {
    hi: 0,
    lo: 0,
    ts_ms: EMPTY,
};

/// Smallest non-empty capacity (slots, a power of two).
const MIN_CAPACITY: usize = 16;

/// Open-addressing map from (hi, lo) to a time. Grows at 3/4 full, so a
/// held id costs 32-64 bytes.
#[derive(Debug, Default, Clone)]
pub(crate) struct IdTable {
    slots: Vec<Slot>,
    len: usize,
}

/// Where a key is, or where it would go.
enum Probe {
    Found(usize),
    Free(usize),
}

impl IdTable {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Linear probe from `lo`'s home slot; the table is never full.
    fn probe(&self, hi: u64, lo: u64) -> Probe {
        let mask = self.mask();
        let mut at = lo as usize & mask;
        loop {
            let slot = &self.slots[at];
            if slot.ts_ms == EMPTY {
                return Probe::Free(at);
            }
            if slot.hi == hi && slot.lo == lo {
                return Probe::Found(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The time held for the key (tests: the fold asks [`IdTable::hold`]).
    #[cfg(test)]
    pub(crate) fn get(&self, hi: u64, lo: u64) -> Option<i64> {
        if self.slots.is_empty() {
            return None;
        }
        match self.probe(hi, lo) {
            Probe::Found(at) => Some(self.slots[at].ts_ms),
            Probe::Free(_) => None,
        }
    }

    /// Holds the key at `ts_ms` unless it is held and `stands` says its
    /// time stays: whether it was held anew.
    pub(crate) fn hold(
        &mut self,
        hi: u64,
        lo: u64,
        ts_ms: i64,
        stands: impl FnOnce(i64) -> bool,
    ) -> bool {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize((self.slots.len() * 2).max(MIN_CAPACITY));
        }
        let ts_ms = ts_ms.max(EMPTY + 1);
        match self.probe(hi, lo) {
            Probe::Found(at) => {
                if stands(self.slots[at].ts_ms) {
                    return false;
                }
                self.slots[at].ts_ms = ts_ms;
            }
            Probe::Free(at) => {
                self.slots[at] = Slot { hi, lo, ts_ms };
                self.len += 1;
            }
        }
        true
    }

    /// Keeps the entries whose time `keep` accepts (rebuilding the table,
    /// smaller if most went).
    pub(crate) fn retain(&mut self, keep: impl Fn(i64) -> bool) {
        let kept: Vec<Slot> = self
            .slots
            .iter()
            .filter(|s| s.ts_ms != EMPTY && keep(s.ts_ms))
            .copied()
            .collect();
        if kept.len() == self.len {
            return;
        }
        self.slots = Vec::new();
        self.len = 0;
        self.resize(Self::capacity_for(kept.len()));
        for s in kept {
            if let Probe::Free(at) = self.probe(s.hi, s.lo) {
                self.slots[at] = s;
                self.len += 1;
            }
        }
    }

    /// Capacity that holds `n` at most half full (0 for none).
    fn capacity_for(n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (n * 2).next_power_of_two().max(MIN_CAPACITY)
        }
    }

    fn resize(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, vec![FREE; capacity]);
        if capacity == 0 {
            return;
        }
        for s in old.into_iter().filter(|s| s.ts_ms != EMPTY) {
            if let Probe::Free(at) = self.probe(s.hi, s.lo) {
                self.slots[at] = s;
            }
        }
    }

    /// Asks the CPU to start loading the key's home slot (a hint: it
    /// changes nothing the table does, only how soon the line is there).
    pub(crate) fn prefetch(&self, lo: u64) {
        if !self.slots.is_empty() {
            mem_prefetch::prefetch_read_data::<Slot, 3>(&self.slots[lo as usize & self.mask()]);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use rand::{Rng, SeedableRng};

    use super::*;

    /// Random holds, lookups and sweeps agree with a HashMap doing the
    /// same; keys share low bits often (long probe runs, wrap-around).
    #[test]
    fn behaves_like_a_map() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut table = IdTable::default();
        let mut model: HashMap<(u64, u64), i64> = HashMap::new();
        for step in 0..200_000u32 {
            let (hi, lo) = (
                rng.random_range(0..4_000u64),
                (rng.random_range(0..64u64) << 58) | (rng.random_range(0..4u64) * 15),
            );
            match rng.random_range(0..10) {
                0..=6 => {
                    let ts = rng.random_range(0..1_000i64);
                    let since = rng.random_range(0..1_000i64);
                    let held = table.hold(hi, lo, ts, |t| t >= since);
                    let want = match model.get(&(hi, lo)) {
                        Some(&t) if t >= since => false,
                        _ => {
                            model.insert((hi, lo), ts);
                            true
                        }
                    };
                    assert_eq!(held, want, "step {step}");
                }
                7..=8 => assert_eq!(table.get(hi, lo), model.get(&(hi, lo)).copied()),
                _ if step % 50 == 0 => {
                    let cutoff = rng.random_range(0..1_000i64);
                    table.retain(|t| t >= cutoff);
                    model.retain(|_, t| *t >= cutoff);
                }
                _ => table.prefetch(lo),
            }
            assert_eq!(table.len(), model.len());
        }
        for (&(hi, lo), &t) in &model {
            assert_eq!(table.get(hi, lo), Some(t));
        }
        table.retain(|_| false);
        assert_eq!(table.len(), 0);
        assert_eq!(table.get(1, 2), None);
        assert!(table.hold(1, 2, i64::MIN, |_| true));
        assert_eq!(table.get(1, 2), Some(i64::MIN + 1));
    }
}
