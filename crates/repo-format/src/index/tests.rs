//! The compact index against a plain hash map model of SPEC.md §7.2.

use super::*;
use proptest::prelude::*;

impl MasterIndex {
    /// The same index, merging its overlay from `n` entries on.
    fn with_merge_min(mut self, n: usize) -> Self {
        self.merge_min = n;
        self
    }
}

fn arb_index() -> impl Strategy<Value = IndexFile> {
    let entry = (
        any::<[u8; 32]>(),
        0u8..2,
        0u8..2,
        0u32..1 << 30,
        40u32..1 << 20,
        any::<u32>(),
    )
        .prop_map(|(id, t, c, o, s, r)| PackEntry {
            id: Id(id),
            ty: BlobType::from_u8(t).unwrap(),
            compression: Compression::from_u8(c).unwrap(),
            offset: o,
            stored_len: s,
            raw_len: r,
        });
    let pack = (any::<[u8; 32]>(), proptest::collection::vec(entry, 0..6))
        .prop_map(|(id, blobs)| IndexPack { id: Id(id), blobs });
    (
        proptest::collection::vec(any::<[u8; 32]>().prop_map(Id), 0..3),
        proptest::collection::vec(pack, 0..5),
    )
        .prop_map(|(supersedes, packs)| IndexFile { supersedes, packs })
}

proptest! {
    #[test]
    fn index_round_trip(f in arb_index()) {
        let enc = f.encode();
        prop_assert_eq!(&IndexFile::decode(&enc).unwrap(), &f);
        for cut in 0..enc.len() {
            prop_assert!(IndexFile::decode(&enc[..cut]).is_err());
            prop_assert!(IndexBuilder::new(&HashSet::new()).converter().decode(&enc[..cut]).is_err());
        }
        let m = MasterIndex::from_files([(Id::default(), &f)]);
        for p in &f.packs {
            for b in &p.blobs {
                prop_assert!(m.get(b.ty, &b.id).is_some());
            }
        }
    }
}

fn entry(id: Id, ty: BlobType, offset: u32) -> PackEntry {
    PackEntry {
        id,
        ty,
        compression: if offset % 3 == 0 {
            Compression::Zstd
        } else {
            Compression::None
        },
        offset,
        stored_len: 40 + offset % 1000,
        raw_len: offset.wrapping_mul(7),
    }
}

fn file(supersedes: Vec<Id>, packs: Vec<(Id, Vec<PackEntry>)>) -> IndexFile {
    IndexFile {
        supersedes,
        packs: packs
            .into_iter()
            .map(|(id, blobs)| IndexPack { id, blobs })
            .collect(),
    }
}

/// Two IDs with the same 16-byte prefix when `family` is equal.
fn family_id(family: u8, member: u8) -> Id {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&[family.wrapping_mul(37); 16]);
    b[16..].copy_from_slice(&[member; 16]);
    b[31] = family;
    Id(b)
}

fn pack_id(n: u8) -> Id {
    Id([0xb0 ^ n; 32])
}

fn file_name(n: u8) -> Id {
    let mut b = [0xf0; 32];
    b[0] = n;
    Id(b)
}

/// Blobs with uniformly random IDs, enough that lookups interpolate.
fn filler(seed: u64, n: u32) -> Vec<PackEntry> {
    (0..n)
        .map(|i| {
            let id = Id(
                *blake3::hash(&[seed.to_le_bytes(), u64::from(i).to_le_bytes()].concat())
                    .as_bytes(),
            );
            entry(
                id,
                if i % 4 == 0 {
                    BlobType::Tree
                } else {
                    BlobType::Data
                },
                i * 100,
            )
        })
        .collect()
}

type Model = HashMap<(BlobType, Id), BlobLocation>;

/// SPEC.md §7.2 spelled out: the previous `MasterIndex`.
fn model(files: &[(Id, IndexFile)], excluded: &HashSet<Id>) -> Model {
    let superseded: HashSet<Id> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut m = Model::new();
    for (name, f) in files {
        if superseded.contains(name) {
            continue;
        }
        for p in f.packs.iter().filter(|p| !excluded.contains(&p.id)) {
            model_add(&mut m, &p.id, &p.blobs);
        }
    }
    m
}

fn model_add(m: &mut Model, pack: &Id, blobs: &[PackEntry]) {
    for b in blobs {
        m.entry((b.ty, b.id)).or_insert(BlobLocation {
            pack: *pack,
            entry: *b,
        });
    }
}

/// Checks every answer of `idx` against the model: indexed blobs exactly; other IDs
/// absent, unless they share a prefix with exactly one indexed blob of their type (the
/// documented false positive), and then with that blob's location.
fn check(idx: &MasterIndex, m: &Model, probes: &[(BlobType, Id)]) -> Result<(), TestCaseError> {
    prop_assert_eq!(idx.len(), m.len());
    let mut groups: HashMap<(BlobType, u128), Vec<Id>> = HashMap::new();
    for (ty, id) in m.keys() {
        groups.entry((*ty, prefix(id))).or_default().push(*id);
    }
    let keys: Vec<(BlobType, Id)> = m.keys().copied().collect();
    for (ty, id) in keys.iter().chain(probes) {
        let got = idx.get(*ty, id);
        prop_assert_eq!(got.is_some(), idx.contains(*ty, id));
        if let Some(want) = m.get(&(*ty, *id)) {
            prop_assert_eq!(got, Some(*want), "{:?} {:?}", ty, id);
            continue;
        }
        if let Some(got) = got {
            let group = groups.get(&(*ty, prefix(id))).map(Vec::as_slice);
            let Some([other]) = group else {
                return Err(TestCaseError::fail(format!(
                    "absent {ty:?} {id:?} found, prefix group {group:?}"
                )));
            };
            let mut want = m[&(*ty, *other)];
            want.entry.id = *id;
            prop_assert_eq!(got, want);
        }
    }
    let mut blobs: Vec<_> = idx
        .blobs()
        .map(|b| {
            (
                b.ty,
                b.pack,
                b.compression as u8,
                b.offset,
                b.stored_len,
                b.raw_len,
            )
        })
        .collect();
    let mut want: Vec<_> = m
        .values()
        .map(|l| {
            let e = l.entry;
            (
                e.ty,
                l.pack,
                e.compression as u8,
                e.offset,
                e.stored_len,
                e.raw_len,
            )
        })
        .collect();
    blobs.sort_by_key(|b| (b.0, b.1, b.2, b.3, b.4, b.5));
    want.sort_by_key(|b| (b.0, b.1, b.2, b.3, b.4, b.5));
    prop_assert_eq!(blobs, want);
    let mut packs = idx.packs();
    let mut want: Vec<Id> = m
        .values()
        .map(|l| l.pack)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    packs.sort();
    want.sort();
    prop_assert_eq!(packs, want);
    Ok(())
}

/// An index entry drawn from a small pool: many duplicates and prefix collisions.
fn arb_entry() -> impl Strategy<Value = PackEntry> {
    (0u8..5, 0u8..3, 0u8..2, 0u32..5000)
        .prop_map(|(f, m, t, o)| entry(family_id(f, m), BlobType::from_u8(t).unwrap(), o))
}

fn arb_files() -> impl Strategy<Value = Vec<(Id, IndexFile)>> {
    let pack = (0u8..6, proptest::collection::vec(arb_entry(), 0..5));
    let f = (
        proptest::collection::vec(0u8..8, 0..2),
        proptest::collection::vec(pack, 0..4),
    );
    proptest::collection::vec(f, 1..6).prop_map(|files| {
        files
            .into_iter()
            .enumerate()
            .map(|(n, (sup, packs))| {
                let f = file(
                    sup.into_iter().map(file_name).collect(),
                    packs.into_iter().map(|(p, b)| (pack_id(p), b)).collect(),
                );
                (file_name(n as u8), f)
            })
            .collect()
    })
}

/// What an incremental add adds: an indexed blob again, a blob of a new prefix family
/// (families are used by one add only, so IDs added by different calls never share a
/// prefix), or a new member of a loaded family.
#[derive(Debug, Clone)]
enum Add {
    Again(usize),
    Fresh(u8, u8),
    Member(u8, u8),
}

/// One `add_pack` call: the pack, and per blob what it is, its type and offset.
type AddCall = (u8, Vec<(Add, u8, u32)>);

fn arb_adds() -> impl Strategy<Value = Vec<AddCall>> {
    let add = prop_oneof![
        any::<usize>().prop_map(Add::Again),
        (0u8..2, 0u8..3).prop_map(|(f, m)| Add::Fresh(f, m)),
        (0u8..5, 10u8..12).prop_map(|(f, m)| Add::Member(f, m)),
    ];
    proptest::collection::vec(
        (
            0u8..8,
            proptest::collection::vec((add, 0u8..2, 0u32..5000), 0..6),
        ),
        0..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn compact_index_matches_model(
        mut files in arb_files(),
        excluded in proptest::collection::hash_set((0u8..6).prop_map(pack_id), 0..3),
        adds in arb_adds(),
        merge_min in 1usize..6,
        with_filler in any::<bool>(),
    ) {
        if with_filler {
            files.push((file_name(200), file(vec![], vec![(pack_id(7), filler(1, 300))])));
        }
        let mut m = model(&files, &excluded);
        let mut probes: Vec<(BlobType, Id)> = Vec::new();
        for ty in [BlobType::Data, BlobType::Tree] {
            for f in 0..5 {
                for member in 0..14 {
                    probes.push((ty, family_id(f, member)));
                }
            }
            for e in filler(2, 50) {
                probes.push((ty, e.id));
            }
        }

        // Built from decoded files in listing order ...
        let idx = MasterIndex::from_files_excluding(files.iter().map(|(n, f)| (*n, f)), &excluded);
        check(&idx, &m, &probes)?;
        // ... and streamed from their encodings in another order: the same index.
        let encoded: Vec<Vec<u8>> = files.iter().map(|(_, f)| f.encode()).collect();
        let mut b = IndexBuilder::new(&excluded);
        let conv = b.converter();
        for n in (0..files.len()).rev() {
            b.add(n, files[n].0, conv.decode(&encoded[n]).unwrap());
        }
        let streamed = b
            .finish(|n| IndexFile::decode(&encoded[n]).map(Cow::Owned))
            .unwrap();
        check(&streamed, &m, &probes)?;

        // Incremental adds, merged early and often.
        let mut idx = idx.with_merge_min(merge_min);
        let loaded_groups: HashSet<(BlobType, u128)> = {
            let mut count: HashMap<(BlobType, u128), usize> = HashMap::new();
            for (ty, id) in m.keys() {
                *count.entry((*ty, prefix(id))).or_default() += 1;
            }
            count.into_iter().filter(|(_, c)| *c > 1).map(|(k, _)| k).collect()
        };
        for (call, (pack, blobs)) in adds.iter().enumerate() {
            let known: Vec<(BlobType, Id)> = m.keys().copied().collect();
            let entries: Vec<PackEntry> = blobs
                .iter()
                .filter_map(|(what, ty, offset)| {
                    let ty = BlobType::from_u8(*ty).unwrap();
                    let id = match what {
                        Add::Again(i) if !known.is_empty() => {
                            let (ty, id) = known[i % known.len()];
                            return Some(entry(id, ty, *offset));
                        }
                        Add::Again(_) => return None,
                        Add::Fresh(f, member) => family_id(100 + 2 * call as u8 + f, *member),
                        Add::Member(f, member) => {
                            let id = family_id(*f, *member);
                            if !loaded_groups.contains(&(ty, prefix(&id))) {
                                return None;
                            }
                            id
                        }
                    };
                    Some(entry(id, ty, *offset))
                })
                .collect();
            idx.add_pack(&pack_id(*pack), &entries);
            model_add(&mut m, &pack_id(*pack), &entries);
            for e in &entries {
                probes.push((e.ty, e.id));
                probes.push((e.ty, family_id(e.id.0[31], 13)));
            }
            check(&idx, &m, &probes)?;
        }
    }
}

#[test]
fn superseded_files_are_ignored() {
    let e = PackEntry {
        id: Id([1; 32]),
        ty: BlobType::Data,
        compression: Compression::None,
        offset: 0,
        stored_len: 50,
        raw_len: 10,
    };
    let old = IndexFile {
        supersedes: vec![],
        packs: vec![IndexPack {
            id: Id([9; 32]),
            blobs: vec![e],
        }],
    };
    let new = IndexFile {
        supersedes: vec![Id([2; 32])],
        packs: vec![],
    };
    let m = MasterIndex::from_files([(Id([2; 32]), &old), (Id([3; 32]), &new)]);
    assert!(m.get(BlobType::Data, &e.id).is_none());
    let m = MasterIndex::from_files([(Id([4; 32]), &old), (Id([3; 32]), &new)]);
    assert_eq!(m.get(BlobType::Data, &e.id).unwrap().pack, Id([9; 32]));
    assert!(
        m.get(BlobType::Tree, &e.id).is_none(),
        "a data blob is not a tree blob with the same ID"
    );
}

#[test]
fn records_are_32_bytes() {
    assert_eq!(std::mem::size_of::<Record>(), 32);
}

#[test]
fn every_field_survives_compaction() {
    let mut e = entry(family_id(1, 1), BlobType::Tree, 7);
    e.compression = Compression::Zstd;
    e.offset = 1;
    e.stored_len = u32::MAX - 1;
    e.raw_len = u32::MAX;
    let f = file(vec![], vec![(pack_id(1), vec![e])]);
    let m = MasterIndex::from_files([(file_name(0), &f)]);
    assert_eq!(
        m.get(BlobType::Tree, &e.id),
        Some(BlobLocation {
            pack: pack_id(1),
            entry: e
        })
    );
}

/// Counts re-reads and serves files from memory.
fn build(files: &[(Id, IndexFile)], rereads: &mut Vec<usize>) -> MasterIndex {
    let none = HashSet::new();
    let mut b = IndexBuilder::new(&none);
    let conv = b.converter();
    for (n, (name, f)) in files.iter().enumerate() {
        b.add(n, *name, conv.convert(f));
    }
    b.finish(|n| {
        rereads.push(n);
        Ok::<_, Infallible>(Cow::Borrowed(&files[n].1))
    })
    .unwrap()
}

#[test]
fn prefix_collisions_among_indexed_blobs_are_exact() {
    let (a, b, absent) = (family_id(3, 1), family_id(3, 2), family_id(3, 9));
    assert_eq!(prefix(&a), prefix(&b));
    let files = vec![
        (
            file_name(0),
            file(vec![], vec![(pack_id(1), filler(5, 500))]),
        ),
        (
            file_name(1),
            file(
                vec![],
                vec![(pack_id(2), vec![entry(a, BlobType::Data, 10)])],
            ),
        ),
        (
            file_name(2),
            file(
                vec![],
                vec![(pack_id(3), vec![entry(b, BlobType::Data, 20)])],
            ),
        ),
        // A duplicate of `a`: the first claim (file 1) wins.
        (
            file_name(3),
            file(
                vec![],
                vec![(pack_id(4), vec![entry(a, BlobType::Data, 30)])],
            ),
        ),
        // The same ID as a tree: a different blob, alone on its prefix among trees.
        (
            file_name(4),
            file(
                vec![],
                vec![(pack_id(5), vec![entry(a, BlobType::Tree, 40)])],
            ),
        ),
    ];
    let mut rereads = Vec::new();
    let m = build(&files, &mut rereads);
    assert_eq!(
        rereads,
        vec![1, 2, 3],
        "only the files holding the shared prefix"
    );
    let got = m.get(BlobType::Data, &a).unwrap();
    assert_eq!(
        (got.pack, got.entry),
        (pack_id(2), entry(a, BlobType::Data, 10))
    );
    let got = m.get(BlobType::Data, &b).unwrap();
    assert_eq!(
        (got.pack, got.entry),
        (pack_id(3), entry(b, BlobType::Data, 20))
    );
    assert!(
        m.get(BlobType::Data, &absent).is_none(),
        "collided prefixes are exact"
    );
    assert_eq!(m.get(BlobType::Tree, &a).unwrap().pack, pack_id(5));
    assert_eq!(m.len(), 500 + 3);
    assert_eq!(m.collided.len(), 2);

    // Without the file holding `b`, `a` is alone on its prefix again: one record.
    let mut files = files;
    files[0].1.supersedes.push(file_name(2));
    let mut rereads = Vec::new();
    let m = build(&files, &mut rereads);
    assert_eq!(rereads, vec![1, 3]);
    assert!(m.collided.is_empty());
    assert_eq!(m.get(BlobType::Data, &a).unwrap().pack, pack_id(2));
    // The documented false positive: an ID that is not indexed (`b` is gone with its
    // file), sharing the prefix of exactly one indexed blob, finds that blob's location
    // under its own ID.
    for id in [b, absent] {
        let fp = m.get(BlobType::Data, &id).unwrap();
        assert_eq!(
            (fp.pack, fp.entry.id, fp.entry.offset),
            (pack_id(2), id, 10)
        );
    }
}

#[test]
fn no_rereads_without_repeated_prefixes() {
    let files: Vec<(Id, IndexFile)> = (0..4u8)
        .map(|n| {
            (
                file_name(n),
                file(vec![], vec![(pack_id(n), filler(u64::from(n), 200))]),
            )
        })
        .collect();
    let mut rereads = Vec::new();
    let m = build(&files, &mut rereads);
    assert!(rereads.is_empty());
    assert_eq!(m.len(), 800);
    assert_eq!(m.packs().len(), 4);
}

#[test]
fn adds_merge_into_the_sorted_arrays() {
    let mut m = MasterIndex::new().with_merge_min(100);
    let all = filler(9, 1000);
    for (n, chunk) in all.chunks(30).enumerate() {
        m.add_pack(&pack_id(n as u8), chunk);
        // Again: every entry is already there.
        m.add_pack(&pack_id(200), chunk);
    }
    assert_eq!(m.len(), 1000);
    assert!(m.overlay.len() < 100);
    assert!(m.sorted[0].len() > 600);
    for (n, e) in all.iter().enumerate() {
        let got = m.get(e.ty, &e.id).unwrap();
        assert_eq!((got.pack, got.entry), (pack_id((n / 30) as u8), *e));
    }
    assert!(!m.packs().contains(&pack_id(200)));
}

#[test]
fn adds_sharing_a_prefix_are_exact_and_a_compact_prefix_counts_as_present() {
    let mut m = MasterIndex::new().with_merge_min(2);
    let (a, b, c) = (family_id(7, 1), family_id(7, 2), family_id(7, 3));
    // Added together: both kept by full ID, through the merge.
    m.add_pack(
        &pack_id(1),
        &[entry(a, BlobType::Data, 1), entry(b, BlobType::Data, 2)],
    );
    assert_eq!(m.collided.len(), 2);
    m.add_pack(&pack_id(2), &[entry(c, BlobType::Data, 3)]);
    for (id, off) in [(a, 1), (b, 2), (c, 3)] {
        assert_eq!(m.get(BlobType::Data, &id).unwrap().entry.offset, off);
    }
    assert!(m.get(BlobType::Data, &family_id(7, 4)).is_none());
    // A prefix held by one record: another ID with it is taken for that record.
    let (x, y) = (family_id(8, 1), family_id(8, 2));
    m.add_pack(
        &pack_id(3),
        &[
            entry(x, BlobType::Tree, 4),
            entry(family_id(9, 0), BlobType::Tree, 5),
        ],
    );
    assert!(m.sorted[1].find(prefix(&x)).is_some());
    m.add_pack(&pack_id(4), &[entry(y, BlobType::Tree, 6)]);
    let got = m.get(BlobType::Tree, &y).unwrap();
    assert_eq!(
        (got.pack, got.entry.id, got.entry.offset),
        (pack_id(3), y, 4)
    );
}

#[test]
fn search_is_exact_for_any_key_distribution() {
    let uniform: Vec<u128> = filler(3, 5000).iter().map(|e| prefix(&e.id)).collect();
    let sets: Vec<Vec<u128>> = vec![
        uniform[..40].to_vec(),
        uniform.clone(),
        // Identical top halves: one directory entry holds them all.
        (0..3000u128).map(|i| (7u128 << 64) | (i * 3)).collect(),
        // Clustered at both ends, and sparse in between.
        (0..3000u128)
            .chain((0..3000u128).map(|i| u128::MAX - i * 5))
            .chain((1..20u128).map(|i| i << 120))
            .collect(),
        // Uniform but for one dense cluster.
        uniform
            .iter()
            .copied()
            .chain((0..2000u128).map(|i| (0x5555u128 << 112) + i))
            .collect(),
    ];
    for mut keys in sets {
        keys.sort_unstable();
        keys.dedup();
        let recs: Vec<Record> = keys
            .iter()
            .map(|k| Record {
                key: *k,
                ..Record::ZERO
            })
            .collect();
        let sorted = Sorted::new(recs.clone());
        assert_eq!(sorted.bits > 0, keys.len() >= 16);
        let mut probes: Vec<u128> = vec![0, u128::MAX, u128::MAX / 3];
        for k in &keys {
            probes.extend([*k, k.wrapping_add(1), k.wrapping_sub(1)]);
        }
        for p in probes {
            let want = keys.binary_search(&p).ok();
            assert_eq!(sorted.find(p).map(|r| r.key), want.map(|i| keys[i]));
            assert_eq!(search(&recs, p, 0, u128::MAX), want);
        }
    }
}

#[test]
fn merge_sorted_merges() {
    let rec = |k: u128| Record {
        key: k,
        ..Record::ZERO
    };
    let mut base: Vec<Record> = [1, 4, 9, 12].map(rec).to_vec();
    merge_sorted(&mut base, &[0, 5, 6, 13].map(rec));
    let keys: Vec<u128> = base.iter().map(|r| r.key).collect();
    assert_eq!(keys, vec![0, 1, 4, 5, 6, 9, 12, 13]);
}

#[test]
fn sort_records_sorts_any_distribution() {
    let uniform: Vec<u128> = (0..RADIX_MIN as u32 * 2)
        .map(|i| prefix(&Id(*blake3::hash(&i.to_le_bytes()).as_bytes())))
        .collect();
    // One top byte for all, and a few buckets only.
    let skewed: Vec<u128> = uniform.iter().map(|k| k >> 8).collect();
    let few: Vec<u128> = uniform
        .iter()
        .map(|k| k & (3u128 << 120 | u128::MAX >> 8))
        .collect();
    for keys in [uniform, skewed, few] {
        let mut recs: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
                key: *k,
                loc: Loc {
                    offset: i as u32,
                    ..Record::ZERO.loc
                },
            })
            .collect();
        sort_records(&mut recs);
        assert!(recs.windows(2).all(|w| w[0].key <= w[1].key));
        // A permutation: every record still there with its location.
        let mut offsets: Vec<u32> = recs.iter().map(|r| r.loc.offset).collect();
        offsets.sort_unstable();
        assert!(offsets.iter().enumerate().all(|(i, o)| *o == i as u32));
        assert!(recs.iter().all(|r| r.key == keys[r.loc.offset as usize]));
    }
}

/// SPEC.md §7.2 with last-resort packs: the first claim outside them, else the first claim.
fn model_last_resort(files: &[(Id, IndexFile)], last: &HashSet<Id>) -> Model {
    let preferred = model(files, last);
    let mut m = model(files, &HashSet::new());
    for (k, loc) in preferred {
        m.insert(k, loc);
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Prune's view: a blob is located outside the last-resort packs whenever it has a
    /// copy there; positions are dense, distinct and lead back to the same location;
    /// summaries and kept entries say what the files say.
    #[test]
    fn survey_view_matches_model(
        mut files in arb_files(),
        last in proptest::collection::hash_set((0u8..6).prop_map(pack_id), 0..4),
        with_filler in any::<bool>(),
    ) {
        if with_filler {
            files.push((file_name(200), file(vec![], vec![(pack_id(7), filler(1, 300))])));
        }
        let none = HashSet::new();
        let mut b = IndexBuilder::new(&none);
        b.last_resort(&last);
        let conv = b.converter();
        for (n, (name, f)) in files.iter().enumerate() {
            let (compact, kept) = conv.decode_keeping(&f.encode(), &last).unwrap();
            // The summary counts what the file lists.
            let s = compact.summary(*name);
            prop_assert_eq!(&s.supersedes, &f.supersedes);
            let want: Vec<PackSummary> = f.packs.iter().map(|p| PackSummary {
                id: p.id,
                blobs: p.blobs.len() as u32,
                stored_bytes: p.blobs.iter().map(|e| u64::from(e.stored_len)).sum(),
            }).collect();
            prop_assert_eq!(s.packs, want);
            // Kept: exactly the last-resort packs, with every entry.
            let want: Vec<IndexPack> =
                f.packs.iter().filter(|p| last.contains(&p.id)).cloned().collect();
            prop_assert_eq!(kept, want);
            b.add(n, *name, compact);
        }
        let idx = b
            .finish(|n| Ok::<_, Infallible>(Cow::Borrowed(&files[n].1)))
            .unwrap();
        let m = model_last_resort(&files, &last);
        prop_assert_eq!(idx.len(), m.len());
        let mut seen = HashSet::new();
        for ((ty, id), loc) in &m {
            prop_assert_eq!(idx.get(*ty, id), Some(*loc), "{:?} {}", ty, id.short());
            if let Some(pos) = idx.position(*ty, id) {
                prop_assert!(pos < idx.position_count());
                prop_assert!(seen.insert(pos), "position {} given twice", pos);
                let at = idx.at_position(pos);
                prop_assert_eq!(
                    (at.ty, at.pack, at.offset, at.stored_len, at.raw_len, at.compression),
                    (*ty, loc.pack, loc.entry.offset, loc.entry.stored_len,
                     loc.entry.raw_len, loc.entry.compression)
                );
            }
        }
        // Every position belongs to some blob (dense).
        prop_assert_eq!(seen.len(), idx.position_count());
    }
}
