//! A bounded per-worker cache of classifications, keyed by normalized text.
//!
//! The key is the normalized text itself; its 64-bit fingerprint only finds the slot. A hit
//! requires the cached [`Classification::normalized`] to be byte-equal to the text looked
//! up, so a fingerprint collision is a miss, never a wrong answer. Two texts with one
//! fingerprint share one slot: the later insert replaces the earlier.
//!
//! Eviction is CLOCK (second chance): a hit sets the entry's reference bit; when the cache
//! is full, the hand sweeps the slots, clearing set bits, and evicts the first entry whose
//! bit is clear. A new entry starts with its bit clear, so a stream of one-off statements
//! evicts other one-off statements before anything that was hit since the hand last passed.
//! Lookups, hits and inserts are O(1) (eviction is amortized O(1)); a hit does not allocate.
//!
//! The slot index hashes fingerprints with a per-cache random seed, so a client cannot
//! choose statements whose fingerprints collide in the index's buckets.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::Classification;

/// Normalized texts longer than this are not cached (they are classified on every use),
/// so the cache's memory stays bounded by `capacity × MAX_ENTRY_BYTES` plus the
/// classifications, however large the statements clients send.
pub const MAX_ENTRY_BYTES: usize = 16 * 1024;

/// A bounded cache of classifications. Not thread-safe by design: one per worker.
pub struct ClassCache {
    capacity: usize,
    /// Fingerprint → slot.
    index: HashMap<u64, usize, SeededState>,
    slots: Vec<Slot>,
    /// The CLOCK hand: the next slot to consider for eviction.
    hand: usize,
    hits: u64,
    misses: u64,
}

struct Slot {
    value: Arc<Classification>,
    referenced: bool,
}

impl ClassCache {
    /// A cache holding at most `capacity` classifications; 0 disables it (every lookup
    /// misses, inserts are dropped).
    pub fn new(capacity: usize) -> ClassCache {
        let reserve = capacity.min(4096);
        ClassCache {
            capacity,
            index: HashMap::with_capacity_and_hasher(reserve, SeededState::new()),
            slots: Vec::with_capacity(reserve),
            hand: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// The classification cached for `normalized` (whose fingerprint is `hash`), if any.
    pub fn get(&mut self, hash: u64, normalized: &[u8]) -> Option<Arc<Classification>> {
        if let Some(&i) = self.index.get(&hash) {
            let slot = &mut self.slots[i];
            if slot.value.normalized.as_bytes() == normalized {
                slot.referenced = true;
                self.hits += 1;
                return Some(Arc::clone(&slot.value));
            }
        }
        self.misses += 1;
        None
    }

    /// Caches `value` under its own fingerprint and normalized text, evicting an entry if
    /// the cache is full. Texts longer than [`MAX_ENTRY_BYTES`] are not cached.
    pub fn insert(&mut self, value: Arc<Classification>) {
        if self.capacity == 0 || value.normalized.len() > MAX_ENTRY_BYTES {
            return;
        }
        let hash = value.fingerprint;
        if let Some(&i) = self.index.get(&hash) {
            // The same text again, or another text with the same fingerprint.
            self.slots[i] = Slot {
                value,
                referenced: false,
            };
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(hash, self.slots.len());
            self.slots.push(Slot {
                value,
                referenced: false,
            });
            return;
        }
        let victim = self.sweep();
        self.index.remove(&self.slots[victim].value.fingerprint);
        self.index.insert(hash, victim);
        self.slots[victim] = Slot {
            value,
            referenced: false,
        };
    }

    /// Advances the hand to the first slot whose reference bit is clear, clearing the bits
    /// it passes, and returns that slot (the hand moves past it). Terminates within one
    /// turn plus one slot: the first turn clears every bit.
    fn sweep(&mut self) -> usize {
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[i];
            if slot.referenced {
                slot.referenced = false;
            } else {
                return i;
            }
        }
    }

    /// How many classifications are cached.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The most classifications it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Lookups that found their text.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that did not.
    pub fn misses(&self) -> u64 {
        self.misses
    }
}

/// Hashes fingerprints (already uniformly distributed, but chosen by clients) with a
/// random per-cache seed and a folded multiply.
#[derive(Clone)]
struct SeededState(u64);

impl SeededState {
    fn new() -> SeededState {
        SeededState(RandomState::new().hash_one(0x51u64))
    }
}

impl BuildHasher for SeededState {
    type Hasher = SeededHasher;

    fn build_hasher(&self) -> SeededHasher {
        SeededHasher(self.0)
    }
}

struct SeededHasher(u64);

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for SeededHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        let product = u128::from(v ^ self.0) * u128::from(MULTIPLIER);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fingerprint: u64, text: &str) -> Arc<Classification> {
        Arc::new(Classification {
            fingerprint,
            normalized: text.to_owned(),
            statements: Vec::new(),
        })
    }

    fn has(cache: &mut ClassCache, fingerprint: u64, text: &str) -> bool {
        cache.get(fingerprint, text.as_bytes()).is_some()
    }

    #[test]
    fn hit_returns_the_same_arc_and_counts() {
        let mut cache = ClassCache::new(4);
        assert!(cache.is_empty());
        let a = entry(1, "select 0");
        cache.insert(Arc::clone(&a));
        let got = cache.get(1, b"select 0").unwrap();
        assert!(Arc::ptr_eq(&a, &got));
        assert!(cache.get(2, b"select 0").is_none());
        assert_eq!((cache.hits(), cache.misses(), cache.len()), (1, 1, 1));
    }

    #[test]
    fn a_hit_needs_equal_text_not_just_an_equal_hash() {
        let mut cache = ClassCache::new(4);
        cache.insert(entry(7, "select 0"));
        assert!(!has(&mut cache, 7, "drop table t"));
        assert!(!has(&mut cache, 7, "select 0 "));
        assert!(has(&mut cache, 7, "select 0"));
        // A colliding text replaces the entry in its slot.
        cache.insert(entry(7, "drop table t"));
        assert_eq!(cache.len(), 1);
        assert!(!has(&mut cache, 7, "select 0"));
        assert!(has(&mut cache, 7, "drop table t"));
    }

    #[test]
    fn clock_gives_hit_entries_a_second_chance() {
        let mut cache = ClassCache::new(2);
        cache.insert(entry(1, "a"));
        cache.insert(entry(2, "b"));
        assert!(has(&mut cache, 1, "a"));
        // Full: the hand passes "a" (referenced, cleared) and evicts "b".
        cache.insert(entry(3, "c"));
        assert_eq!(cache.len(), 2);
        assert!(!has(&mut cache, 2, "b"));
        // The hand now points at "a", whose bit the sweep cleared: it goes next.
        cache.insert(entry(4, "d"));
        assert!(!has(&mut cache, 1, "a"));
        assert!(has(&mut cache, 3, "c"));
        assert!(has(&mut cache, 4, "d"));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn one_off_entries_evict_each_other_not_the_hot_one() {
        let mut cache = ClassCache::new(8);
        cache.insert(entry(1000, "hot"));
        for i in 0..1000u64 {
            assert!(has(&mut cache, 1000, "hot"), "hot entry evicted at {i}");
            cache.insert(entry(i, &format!("cold {i}")));
            assert!(cache.len() <= 8);
        }
        assert_eq!(cache.len(), 8);
        // The seven most recent one-offs are still there, older ones are gone.
        assert!(has(&mut cache, 999, "cold 999"));
        assert!(has(&mut cache, 993, "cold 993"));
        assert!(!has(&mut cache, 992, "cold 992"));
    }

    #[test]
    fn all_referenced_still_evicts_one() {
        let mut cache = ClassCache::new(3);
        for i in 0..3 {
            cache.insert(entry(i, &i.to_string()));
            assert!(has(&mut cache, i, &i.to_string()));
        }
        cache.insert(entry(9, "9"));
        assert_eq!(cache.len(), 3);
        // A full turn cleared every bit, then the hand's first slot went.
        assert!(!has(&mut cache, 0, "0"));
        assert!(has(&mut cache, 9, "9"));
    }

    #[test]
    fn capacity_zero_disables_the_cache() {
        let mut cache = ClassCache::new(0);
        cache.insert(entry(1, "a"));
        assert!(!has(&mut cache, 1, "a"));
        assert_eq!((cache.len(), cache.hits(), cache.misses()), (0, 0, 1));
    }

    #[test]
    fn oversized_texts_are_not_cached() {
        let mut cache = ClassCache::new(2);
        let big = "x".repeat(MAX_ENTRY_BYTES + 1);
        cache.insert(entry(1, &big));
        assert!(cache.is_empty());
        let limit = "x".repeat(MAX_ENTRY_BYTES);
        cache.insert(entry(2, &limit));
        assert!(has(&mut cache, 2, &limit));
    }

    #[test]
    fn seeded_hasher_spreads_and_differs_per_cache() {
        let (a, b) = (SeededState::new(), SeededState::new());
        assert_ne!(a.hash_one(42u64), b.hash_one(42u64));
        assert_ne!(a.hash_one(42u64), a.hash_one(43u64));
    }
}
