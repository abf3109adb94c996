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
//! server as it is: a lone random read costs no extra bytes. A small read spans at most two
//! blocks; only the ones not kept already are fetched. Memory is bounded: at most the
//! capacity given to [`ReadAhead::new`] in blocks, least recently used first out, plus
//! what is in flight. Two threads that miss the same block at the same time both fetch it.

use std::collections::{BTreeMap, HashMap, VecDeque};
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

/// A block: object key and block number.
type BlockId = (Arc<str>, u64);

#[derive(Debug, Default)]
struct State {
    /// Objects read recently, most recent last.
    recent: VecDeque<Arc<str>>,
    /// Kept blocks: their bytes (the last block of an object may be short) and when they
    /// were last used.
    blocks: HashMap<BlockId, (Arc<[u8]>, u64)>,
    /// The kept blocks by last use, oldest first.
    lru: BTreeMap<u64, BlockId>,
    /// Use counter for `lru`.
    tick: u64,
    /// Bytes in `blocks`.
    bytes: u64,
}

impl State {
    /// The kept block `id`, marked as just used.
    fn touch(&mut self, id: &BlockId) -> Option<Arc<[u8]>> {
        self.tick += 1;
        let tick = self.tick;
        let (data, used) = self.blocks.get_mut(id)?;
        let old = std::mem::replace(used, tick);
        let data = data.clone();
        let id = self.lru.remove(&old).expect("lru lists every block");
        self.lru.insert(tick, id);
        Some(data)
    }

    fn remove(&mut self, id: &BlockId) {
        if let Some((data, used)) = self.blocks.remove(id) {
            self.lru.remove(&used);
            self.bytes -= data.len() as u64;
        }
    }
}

/// What to do for one read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Served from kept blocks.
    Hit(Vec<u8>),
    /// Fetch exactly the bytes asked for; nothing is kept.
    Exact,
    /// Fetch the blocks the read needs that are not kept, then give them to
    /// [`ReadAhead::complete`].
    Blocks(Blocks),
}

/// The blocks one read fetches, and those of its blocks already kept.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Blocks {
    /// First byte to fetch (a block boundary).
    pub(crate) from: u64,
    /// How many bytes (whole blocks; the server sends fewer at the end of the object).
    pub(crate) len: u64,
    /// Kept blocks the read also needs: (first byte, bytes).
    have: Vec<(u64, Arc<[u8]>)>,
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

    /// Decides how to serve `len` (> 0) bytes at `offset` of `key`, and records the read.
    pub(crate) fn plan(&self, key: &str, offset: u64, len: u64) -> Plan {
        if self.block == 0 || len >= self.block / 2 {
            return Plan::Exact;
        }
        let end = offset.saturating_add(len);
        let (first, last) = (offset / self.block, (end - 1) / self.block);
        let key: Arc<str> = Arc::from(key);
        let mut st = self.lock();
        // The kept blocks that hold this read's bytes in them; a short (last) block that
        // ends before the read does not count.
        let mut have = Vec::new();
        let mut missing = Vec::new();
        for b in first..=last {
            let start = b * self.block;
            let needed_end = end.min(start + self.block);
            match st.touch(&(key.clone(), b)) {
                Some(data) if start + data.len() as u64 >= needed_end => have.push((start, data)),
                _ => missing.push(b),
            }
        }
        if missing.is_empty() {
            let mut out = Vec::with_capacity(len as usize);
            copy_range(&mut out, offset, end, &have);
            return Plan::Hit(out);
        }
        let warm = match st.recent.iter().position(|k| *k == key) {
            Some(i) => {
                let k = st.recent.remove(i).expect("found above");
                st.recent.push_back(k);
                true
            }
            None => {
                st.recent.push_back(key);
                if st.recent.len() > TRACKED {
                    st.recent.pop_front();
                }
                false
            }
        };
        if !warm {
            return Plan::Exact;
        }
        // At most two blocks, so the missing ones are contiguous.
        let (lo, hi) = (missing[0], missing[missing.len() - 1]);
        Plan::Blocks(Blocks {
            from: lo * self.block,
            len: (hi + 1 - lo) * self.block,
            have,
        })
    }

    /// Keeps `data`, fetched for `blocks` of `key`, and returns the `len` bytes at
    /// `offset` the read planned by [`ReadAhead::plan`] asked for, or, if the object ends
    /// before them, how many of them it has.
    pub(crate) fn complete(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        blocks: Blocks,
        mut data: Vec<u8>,
    ) -> Result<Vec<u8>, u64> {
        data.truncate(blocks.len as usize);
        let fetched_end = blocks.from + data.len() as u64;
        let mut pieces = blocks.have;
        let key: Arc<str> = Arc::from(key);
        {
            let mut st = self.lock();
            for (i, chunk) in data.chunks(self.block as usize).enumerate() {
                let start = blocks.from + i as u64 * self.block;
                let id = (key.clone(), start / self.block);
                let chunk: Arc<[u8]> = Arc::from(chunk);
                st.remove(&id);
                st.tick += 1;
                let tick = st.tick;
                st.bytes += chunk.len() as u64;
                st.lru.insert(tick, id.clone());
                st.blocks.insert(id, (chunk.clone(), tick));
                pieces.push((start, chunk));
            }
            while st.bytes > self.capacity {
                let Some((_, oldest)) = st.lru.pop_first() else {
                    break;
                };
                if let Some((data, _)) = st.blocks.remove(&oldest) {
                    st.bytes -= data.len() as u64;
                }
            }
        }
        let end = offset + len;
        if fetched_end < end && !pieces.iter().any(|(s, d)| *s + d.len() as u64 >= end) {
            // The object ends before the read does.
            return Err(fetched_end.saturating_sub(offset));
        }
        pieces.sort_by_key(|(s, _)| *s);
        let mut out = Vec::with_capacity(len as usize);
        copy_range(&mut out, offset, end, &pieces);
        if out.len() as u64 == len {
            Ok(out)
        } else {
            Err(out.len() as u64)
        }
    }

    /// Forgets everything about `key` (it was written or removed).
    pub(crate) fn forget(&self, key: &str) {
        if self.block == 0 {
            return;
        }
        let mut st = self.lock();
        st.recent.retain(|k| &**k != key);
        let ids: Vec<BlockId> = st
            .blocks
            .keys()
            .filter(|(k, _)| &**k == key)
            .cloned()
            .collect();
        for id in &ids {
            st.remove(id);
        }
    }
}

/// Appends the bytes `offset..end` found in `pieces` ((first byte, bytes), in order and
/// contiguous) to `out`, stopping at the first gap.
fn copy_range(out: &mut Vec<u8>, offset: u64, end: u64, pieces: &[(u64, Arc<[u8]>)]) {
    for (start, data) in pieces {
        let at = offset + out.len() as u64;
        if at >= end {
            break;
        }
        let piece_end = start + data.len() as u64;
        if *start > at || piece_end <= at {
            continue;
        }
        let to = end.min(piece_end);
        out.extend_from_slice(&data[(at - start) as usize..(to - start) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3500-byte object: byte i is i % 251.
    fn object() -> Vec<u8> {
        (0..3500u32).map(|i| (i % 251) as u8).collect()
    }

    /// What a read fetched (offset, length), if anything, and what it returned.
    type Served = (Option<(u64, u64)>, Result<Vec<u8>, u64>);

    /// Serves a read like the backend does, from `obj`; returns the plan's fetch, if any.
    fn read(ra: &ReadAhead, key: &str, obj: &[u8], offset: u64, len: u64) -> Served {
        let n = obj.len() as u64;
        let slice =
            |from: u64, len: u64| obj[from.min(n) as usize..(from + len).min(n) as usize].to_vec();
        match ra.plan(key, offset, len) {
            Plan::Hit(d) => (None, Ok(d)),
            Plan::Exact => {
                let d = slice(offset, len);
                let got = d.len() as u64;
                (
                    Some((offset, len)),
                    if got == len { Ok(d) } else { Err(got) },
                )
            }
            Plan::Blocks(b) => {
                let fetch = (b.from, b.len);
                let d = slice(b.from, b.len);
                (Some(fetch), ra.complete(key, offset, len, b, d))
            }
        }
    }

    /// A one-byte read, which must succeed (it marks the object as read, or keeps a block).
    fn warm(ra: &ReadAhead, key: &str, obj: &[u8], offset: u64) {
        let (_, got) = read(ra, key, obj, offset, 1);
        assert_eq!(got, Ok(vec![obj[offset as usize]]));
    }

    #[test]
    fn small_reads_of_a_warm_pack_fetch_missing_blocks() {
        let ra = ReadAhead::new(1000, 3000);
        let obj = object();
        let want = |o: u64, l: u64| Ok(obj[o as usize..(o + l) as usize].to_vec());
        // First read of an object: as asked.
        assert_eq!(
            read(&ra, "a", &obj, 2100, 10),
            (Some((2100, 10)), want(2100, 10))
        );
        // The next small read of it, anywhere: the aligned block around it.
        assert_eq!(
            read(&ra, "a", &obj, 1500, 10),
            (Some((1000, 1000)), want(1500, 10))
        );
        // Inside: served from memory.
        assert_eq!(read(&ra, "a", &obj, 1120, 5), (None, want(1120, 5)));
        // Straddling a kept block and a missing one: only the missing one is fetched.
        assert_eq!(
            read(&ra, "a", &obj, 1990, 20),
            (Some((2000, 1000)), want(1990, 20))
        );
        assert_eq!(read(&ra, "a", &obj, 1995, 10), (None, want(1995, 10)));
        assert_eq!(
            read(&ra, "a", &obj, 2995, 10),
            (Some((3000, 1000)), want(2995, 10))
        );
        // Straddling two missing blocks: both, in one fetch.
        assert_eq!(read(&ra, "c", &obj, 0, 1), (Some((0, 1)), want(0, 1)));
        assert_eq!(
            read(&ra, "c", &obj, 995, 10),
            (Some((0, 2000)), want(995, 10))
        );
        assert_eq!(read(&ra, "c", &obj, 1500, 10), (None, want(1500, 10)));
        // Half a block or more: as asked.
        assert_eq!(
            read(&ra, "a", &obj, 500, 500),
            (Some((500, 500)), want(500, 500))
        );
        // Another object starts cold.
        assert_eq!(
            read(&ra, "b", &obj, 110, 10),
            (Some((110, 10)), want(110, 10))
        );
    }

    #[test]
    fn reads_past_the_end_are_truncated() {
        let ra = ReadAhead::new(1000, 10_000);
        let obj = object();
        warm(&ra, "a", &obj, 0);
        // The last block is short (500 bytes); a read past the end says how much there is.
        assert_eq!(
            read(&ra, "a", &obj, 3490, 20),
            (Some((3000, 1000)), Err(10))
        );
        // Also once that block is kept (it is fetched again, and is still short).
        assert_eq!(read(&ra, "a", &obj, 3495, 10), (Some((3000, 1000)), Err(5)));
        assert_eq!(
            read(&ra, "a", &obj, 3495, 5),
            (None, Ok(obj[3495..].to_vec()))
        );
        // Straddling a kept block and the end of the object.
        let short = &obj[..3005];
        warm(&ra, "s", short, 0);
        warm(&ra, "s", short, 2500);
        assert_eq!(
            read(&ra, "s", short, 2995, 20),
            (Some((3000, 1000)), Err(10))
        );
        // Wholly past the end.
        assert_eq!(read(&ra, "a", &obj, 4100, 10), (Some((4000, 1000)), Err(0)));
    }

    #[test]
    fn memory_is_bounded_and_forget_drops_blocks() {
        let ra = ReadAhead::new(1000, 2500);
        let obj = vec![7u8; 10_000];
        warm(&ra, "a", &obj, 0);
        for b in 0..5u64 {
            warm(&ra, "a", &obj, b * 1000);
            let st = ra.lock();
            assert!(st.bytes <= 2500, "{} bytes kept", st.bytes);
            assert_eq!(st.blocks.len(), st.lru.len());
        }
        // The two most recent blocks are kept, the others were evicted.
        assert_eq!(read(&ra, "a", &obj, 4000, 1).0, None);
        assert_eq!(read(&ra, "a", &obj, 3000, 1).0, None);
        assert_eq!(read(&ra, "a", &obj, 0, 1).0, Some((0, 1000)));
        // Using a block keeps it: 3000 was used after 4000, so 4000 went for block 0.
        assert_eq!(read(&ra, "a", &obj, 3000, 1).0, None);
        assert_eq!(read(&ra, "a", &obj, 4000, 1).0, Some((4000, 1000)));
        ra.forget("a");
        assert_eq!(ra.lock().bytes, 0);
        assert!(ra.lock().lru.is_empty());
        // Forgotten: cold again.
        assert_eq!(read(&ra, "a", &obj, 4000, 1).0, Some((4000, 1)));
        // Off: always as asked, nothing kept.
        let off = ReadAhead::new(0, 0);
        for _ in 0..3 {
            assert_eq!(off.plan("a", 0, 1), Plan::Exact);
        }
    }
}
