//! A least-recently-used cache bounded by the bytes its values hold, shared by threads.

use std::hash::Hash;
use std::sync::Mutex;

use lru::LruCache;

/// The entries (each with its weight) and the total weight.
type Entries<K, V> = (LruCache<K, (V, usize)>, usize);

/// Values with their weight (bytes), evicted oldest-used first past `budget`.
#[derive(Debug)]
pub struct WeightedLru<K: Hash + Eq, V: Clone> {
    inner: Mutex<Entries<K, V>>,
    budget: usize,
}

impl<K: Hash + Eq, V: Clone> WeightedLru<K, V> {
    /// An empty cache holding at most `budget` bytes (one value larger than that is not
    /// kept).
    pub fn new(budget: usize) -> Self {
        WeightedLru {
            inner: Mutex::new((LruCache::unbounded(), 0)),
            budget,
        }
    }

    /// The value for `k`, marked as just used.
    pub fn get(&self, k: &K) -> Option<V> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.get(k).map(|(v, _)| v.clone())
    }

    /// Keeps `v` (of `weight` bytes) under `k`, evicting what no longer fits.
    pub fn put(&self, k: K, v: V, weight: usize) {
        if weight > self.budget {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (lru, total) = &mut *g;
        if let Some((_, w)) = lru.put(k, (v, weight)) {
            *total -= w;
        }
        *total += weight;
        while *total > self.budget {
            match lru.pop_lru() {
                Some((_, (_, w))) => *total -= w,
                None => break,
            }
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn weight(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_past_the_budget() {
        let c = WeightedLru::new(10);
        c.put(1, "a", 4);
        c.put(2, "b", 4);
        assert_eq!(c.get(&1), Some("a")); // 2 is now the oldest
        c.put(3, "c", 4);
        assert_eq!(
            (c.get(&1), c.get(&2), c.get(&3)),
            (Some("a"), None, Some("c"))
        );
        assert_eq!(c.weight(), 8);
        c.put(4, "too big", 11);
        assert_eq!((c.get(&4), c.weight()), (None, 8));
        c.put(1, "a2", 2);
        assert_eq!((c.get(&1), c.weight()), (Some("a2"), 6));
    }
}
