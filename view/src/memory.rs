//! [`InMemory`]: a whole view's entries held in memory, for
//! [`crate::OpenedView::hold_in_memory`].

/// Bytes per [`InMemory`] arena chunk.
const CHUNK: usize = 64 << 20;

/// Where one entry lives in an [`InMemory`] view.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    chunk: u32,
    at: u32,
    key_len: u32,
    value_len: u32,
}

/// A whole view's entries in memory: keys and values in 64 MiB chunks, and
/// a hash table of where each one is. A lookup is a hash and a probe, not a
/// RocksDB read (filters, index block, block cache).
#[derive(Debug, Default)]
pub(crate) struct InMemory {
    chunks: Vec<Vec<u8>>,
    slots: hashbrown::HashTable<Slot>,
}

impl InMemory {
    /// Entries held.
    pub(crate) fn entries(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Bytes of keys and values held.
    pub(crate) fn bytes_held(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }

    fn hash(key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::default().hash_one(key)
    }

    fn bytes(&self, s: &Slot) -> &[u8] {
        let at = s.at as usize;
        let len = (s.key_len + s.value_len) as usize;
        &self.chunks[s.chunk as usize][at..at + len]
    }

    pub(crate) fn insert(&mut self, key: &[u8], value: &[u8]) {
        let len = key.len() + value.len();
        if self
            .chunks
            .last()
            .is_none_or(|c| c.len() + len > c.capacity())
        {
            self.chunks.push(Vec::with_capacity(CHUNK.max(len)));
        }
        let chunk = self.chunks.len() - 1;
        let buf = &mut self.chunks[chunk];
        let slot = Slot {
            hash: Self::hash(key),
            chunk: chunk as u32,
            at: buf.len() as u32,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
        };
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        self.slots.insert_unique(slot.hash, slot, |s| s.hash);
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let hash = Self::hash(key);
        let slot = self.slots.find(hash, |s| {
            s.hash == hash && s.key_len as usize == key.len() && &self.bytes(s)[..key.len()] == key
        })?;
        Some(&self.bytes(slot)[key.len()..])
    }
}
