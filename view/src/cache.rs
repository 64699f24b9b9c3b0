//! [`BlockCache`]: the RocksDB block cache opened views share, made by the
//! process that opens them and passed in (no process-wide state).

/// A block cache (uncompressed blocks) for [`crate::OpenedView`]s. Cloning
/// is cheap and shares the cache: a server makes one and passes it to every
/// view it opens.
#[derive(Clone)]
pub struct BlockCache {
    cache: rust_rocksdb::Cache,
}

impl BlockCache {
    /// The size `weft serve` used before it was configurable: 1 GiB.
    pub const DEFAULT_BYTES: usize = 1 << 30;

    /// A cache of `bytes` (an LRU; memory is taken as blocks are cached).
    pub fn new(bytes: usize) -> BlockCache {
        BlockCache {
            cache: rust_rocksdb::Cache::new_lru_cache(bytes),
        }
    }

    pub fn capacity(&self) -> usize {
        self.cache.get_capacity()
    }

    pub fn usage(&self) -> usize {
        self.cache.get_usage()
    }

    pub(crate) fn rocks(&self) -> &rust_rocksdb::Cache {
        &self.cache
    }
}

impl Default for BlockCache {
    /// A cache of [`BlockCache::DEFAULT_BYTES`].
    fn default() -> BlockCache {
        BlockCache::new(BlockCache::DEFAULT_BYTES)
    }
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("capacity", &self.capacity())
            .field("usage", &self.usage())
            .finish()
    }
}
