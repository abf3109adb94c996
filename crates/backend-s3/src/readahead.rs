//! Block reads for small ranged reads of packs.
//!
//! A restore reads blob by blob: one small ranged GET per blob, a few at a time, so over S3
//! it is bound by request latency (tens of thousands of GETs for a tree of small files).
//! The blobs of files backed up together lie close together in their packs, but not in the
//! order a restore wants them (the backup read files in parallel). So once a pack is being
//! read in small pieces, the backend reads it in aligned blocks instead and serves the
//! following reads of those blocks from memory.
//!
//! The first small read of a pack, and every read as large as half a block, goes to the
//! server as it is: a lone random read costs no extra bytes. Memory is bounded: at most the
//! capacity given to [`ReadAhead::new`] in blocks, least recently used first out, plus
//! what is in flight.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// How many recently read objects are remembered.
const TRACKED: usize = 64;

/// The block cache of one backend (see the module documentation).
#[derive(Debug)]
pub(crate) struct ReadAhead {
    block: u64,
    capacity: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Objects read recently, most recent last.
    recent: VecDeque<String>,
    /// Cached spans (key, start offset, bytes), most recently used last.
    spans: VecDeque<(String, u64, Arc<Vec<u8>>)>,
    /// Bytes in `spans`.
    bytes: u64,
}

/// What to do for one read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Served from cached blocks.
    Hit(Vec<u8>),
    /// Fetch `len` bytes from `from` (at or before the read's offset): the read itself, or
    /// the aligned blocks around it, to be given to [`ReadAhead::insert`].
    Fetch {
        /// First byte to fetch.
        from: u64,
        /// How many bytes.
        len: u64,
    },
}

impl ReadAhead {
    /// Blocks of `block` bytes, at most `capacity` bytes of them; `block == 0` turns block
    /// reads off.
    pub(crate) fn new(block: u64, capacity: u64) -> ReadAhead {
        ReadAhead {
            block,
            capacity: capacity.max(block),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a cache: after a panic elsewhere it is still consistent enough.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides how to serve `len` bytes at `offset` of `key`, and records the read.
    pub(crate) fn plan(&self, key: &str, offset: u64, len: u64) -> Plan {
        let exact = Plan::Fetch { from: offset, len };
        if self.block == 0 || len >= self.block / 2 {
            return exact;
        }
        let end = offset.saturating_add(len);
        let mut st = self.lock();
        if let Some(i) = st.spans.iter().position(|(k, start, data)| {
            k == key && *start <= offset && end <= start + data.len() as u64
        }) {
            let span = st.spans.remove(i).expect("found above");
            let from = (offset - span.1) as usize;
            let hit = span.2[from..from + len as usize].to_vec();
            st.spans.push_back(span);
            return Plan::Hit(hit);
        }
        let warm = match st.recent.iter().position(|k| k == key) {
            Some(i) => {
                let k = st.recent.remove(i).expect("found above");
                st.recent.push_back(k);
                true
            }
            None => {
                st.recent.push_back(key.to_owned());
                if st.recent.len() > TRACKED {
                    st.recent.pop_front();
                }
                false
            }
        };
        if !warm {
            return exact;
        }
        let from = offset / self.block * self.block;
        let to = end.div_ceil(self.block).saturating_mul(self.block);
        Plan::Fetch {
            from,
            len: to - from,
        }
    }

    /// Keeps `data`, fetched from `from` of `key` for a [`Plan::Fetch`] of blocks.
    pub(crate) fn insert(&self, key: &str, from: u64, data: Vec<u8>) {
        if self.block == 0 || data.is_empty() {
            return;
        }
        let mut st = self.lock();
        st.bytes += data.len() as u64;
        st.spans.push_back((key.to_owned(), from, Arc::new(data)));
        while st.bytes > self.capacity {
            match st.spans.pop_front() {
                Some((_, _, d)) => st.bytes -= d.len() as u64,
                None => break,
            }
        }
    }

    /// Forgets everything about `key` (it was written or removed).
    pub(crate) fn forget(&self, key: &str) {
        if self.block == 0 {
            return;
        }
        let mut st = self.lock();
        st.recent.retain(|k| k != key);
        let mut freed = 0;
        st.spans.retain(|(k, _, d)| {
            let keep = k != key;
            if !keep {
                freed += d.len() as u64;
            }
            keep
        });
        st.bytes -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(from: u64, len: u64) -> Plan {
        Plan::Fetch { from, len }
    }

    #[test]
    fn small_reads_of_a_warm_pack_fetch_blocks() {
        let ra = ReadAhead::new(1000, 3000);
        // First read of an object: as asked.
        assert_eq!(ra.plan("a", 2100, 10), fetch(2100, 10));
        // The next small read of it, anywhere: the aligned blocks around it.
        assert_eq!(ra.plan("a", 1500, 10), fetch(1000, 1000));
        ra.insert("a", 1000, (0..1000u32).map(|i| i as u8).collect());
        // Inside: served from memory.
        assert_eq!(
            ra.plan("a", 1120, 5),
            Plan::Hit(vec![120, 121, 122, 123, 124])
        );
        // Straddling two blocks: both.
        assert_eq!(ra.plan("a", 1990, 20), fetch(1000, 2000));
        // Half a block or more: as asked.
        assert_eq!(ra.plan("a", 5000, 500), fetch(5000, 500));
        // Another object starts cold.
        assert_eq!(ra.plan("b", 110, 10), fetch(110, 10));
    }

    #[test]
    fn memory_is_bounded_and_forget_drops_blocks() {
        let ra = ReadAhead::new(1000, 2500);
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            ra.insert(key, 0, vec![i as u8; 1000]);
        }
        // "a" was evicted, "b" and "c" are kept.
        assert_eq!(ra.plan("a", 0, 1), fetch(0, 1));
        assert_eq!(ra.plan("b", 0, 1), Plan::Hit(vec![1]));
        assert_eq!(ra.plan("c", 999, 1), Plan::Hit(vec![2]));
        assert!(ra.lock().bytes <= ra.capacity);
        ra.forget("c");
        assert_eq!(ra.plan("c", 0, 1), fetch(0, 1));
        assert_eq!(ra.lock().bytes, 1000);
        // Off: always as asked, nothing kept.
        let off = ReadAhead::new(0, 0);
        off.insert("a", 0, vec![1; 10]);
        assert_eq!(off.plan("a", 0, 1), fetch(0, 1));
        assert_eq!(off.plan("a", 1, 1), fetch(1, 1));
    }
}
