//! Scale check of the in-memory index (issue 3): a repository holding a synthetic index of
//! millions of blob entries, loaded through the real loader, with its resident memory,
//! peak, load time and lookup rate.
//!
//! ```text
//! index_scale create DIR [--blobs N] [--per-pack P] [--packs-per-file F] [--dups D]
//! index_scale load DIR [--lookups N] [--baseline]
//! ```
//!
//! `create` writes a local repository whose `index/` holds N blob entries (one tree pack in
//! 20, the rest data) in files of F packs of P blobs, as a writer would leave them; `--dups D`
//! lists D blobs of the first file again in a later one (two claims of the same blob, which
//! the loader resolves by reading both files again). `load` opens it, loads the index the
//! way `backup` does (the compact loader behind `Repository::begin_write`) and reports; run it in its own
//! process so its peak is the load's. `--baseline` builds the index the way holdfast 0.1
//! did instead (every index file decoded, then a `HashMap` keyed by (type, ID)), for
//! comparison. Not a test: nothing runs it in CI.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::blob::{BlobType, Compression};
use holdfast_repo::index::{IndexFile, IndexPack};
use holdfast_repo::keyfile::KdfParams;
use holdfast_repo::pack::PackEntry;
use holdfast_repo::repository::{InitOptions, Repository, DEFAULT_PACK_SIZE};
use holdfast_repo::Id;
use rand::{Rng, SeedableRng};

const PASSWORD: &[u8] = b"index-scale";

struct Shape {
    blobs: u64,
    per_pack: u64,
    packs_per_file: u64,
    dups: u64,
}

/// The ID of synthetic blob `i`: uniformly distributed, like a keyed BLAKE3 output.
fn blob_id(i: u64) -> Id {
    Id::of_stored_bytes(&i.to_le_bytes())
}

fn pack_id(file: u64, pack: u64) -> Id {
    Id::of_stored_bytes(format!("pack {file} {pack}").as_bytes())
}

/// Index file `f`: blobs `f * per_file ..` in packs of `per_pack`, realistic locations.
fn synthetic_file(s: &Shape, f: u64) -> IndexFile {
    let per_file = s.per_pack * s.packs_per_file;
    let mut rng = rand::rngs::StdRng::seed_from_u64(f);
    let mut packs = Vec::new();
    let mut i = f * per_file;
    for p in 0..s.packs_per_file {
        let ty = if (f * s.packs_per_file + p) % 20 == 19 {
            BlobType::Tree
        } else {
            BlobType::Data
        };
        let mut offset = 0u32;
        let mut blobs = Vec::new();
        while blobs.len() < s.per_pack as usize && i < s.blobs {
            let raw_len = rng.gen_range(512..(32 << 20) / s.per_pack as u32);
            let zstd = rng.gen_bool(0.5);
            let stored_len = 40 + if zstd { raw_len / 3 } else { raw_len };
            blobs.push(PackEntry {
                id: blob_id(i),
                ty,
                compression: if zstd {
                    Compression::Zstd
                } else {
                    Compression::None
                },
                offset,
                stored_len,
                raw_len,
            });
            offset += stored_len;
            i += 1;
        }
        if blobs.is_empty() {
            break;
        }
        packs.push(IndexPack {
            id: pack_id(f, p),
            blobs,
        });
    }
    IndexFile {
        supersedes: vec![],
        packs,
    }
}

fn create(dir: &Path, s: &Shape) -> Result<(), Box<dyn std::error::Error>> {
    let backend = Arc::new(LocalBackend::new(dir));
    let repo = Repository::init(
        backend,
        PASSWORD,
        &InitOptions {
            chunk: (512 << 10, 1 << 20, 8 << 20),
            pack_size: DEFAULT_PACK_SIZE,
            kdf: KdfParams {
                m_cost_kib: 8,
                t_cost: 1,
                p_cost: 1,
            },
            host: "bench".into(),
            user: "bench".into(),
            now_ns: 0,
        },
    )?;
    let per_file = s.per_pack * s.packs_per_file;
    let files = s.blobs.div_ceil(per_file);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let t = Instant::now();
    let session = repo.start_session(holdfast_repo::gc::Role::Writer, "bench")?;
    std::thread::scope(|sc| -> Result<(), holdfast_repo::Error> {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let (repo, session) = (&repo, &session);
                sc.spawn(move || -> Result<(), holdfast_repo::Error> {
                    for f in (w..files).step_by(threads as usize) {
                        repo.save_index(session, &synthetic_file(s, f))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer thread")?;
        }
        Ok(())
    })?;
    if s.dups > 0 {
        // The first file's first blobs claimed again by another pack.
        let first = synthetic_file(s, 0);
        let blobs: Vec<PackEntry> = first
            .packs
            .iter()
            .flat_map(|p| p.blobs.iter().copied())
            .take(s.dups as usize)
            .collect();
        repo.save_index(
            &session,
            &IndexFile {
                supersedes: vec![],
                packs: vec![IndexPack {
                    id: pack_id(u64::MAX, 0),
                    blobs,
                }],
            },
        )?;
    }
    println!(
        "created {} index files ({} blob entries, {} per pack, {} packs per file, {} duplicate claims) in {:.1} s",
        files + u64::from(s.dups > 0),
        s.blobs,
        s.per_pack,
        s.packs_per_file,
        s.dups,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// VmRSS and VmHWM of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system, all threads) this process has used, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

/// Resets VmHWM to the current RSS (Linux 4.0+), so the peak measured is the load's.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

const MIB: f64 = 1024.0 * 1024.0;

/// What holdfast 0.1 built: every index file decoded first, then one hash map entry per
/// blob with interned packs.
#[allow(dead_code)]
struct BaselineSlot {
    pack: u32,
    compression: Compression,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
}

/// Loads the index as holdfast 0.1 did and reports; `rss0` is the RSS before.
fn baseline(repo: &Repository, rss0: u64, lookups: usize) -> Result<(), holdfast_repo::Error> {
    let t = Instant::now();
    let files = repo.index_files()?;
    let mut packs: Vec<Id> = Vec::new();
    let mut pack_slots: HashMap<Id, u32> = HashMap::new();
    let mut blobs: HashMap<(BlobType, Id), BaselineSlot> = HashMap::new();
    for (_, f) in &files {
        for p in &f.packs {
            let slot = *pack_slots.entry(p.id).or_insert_with(|| {
                packs.push(p.id);
                (packs.len() - 1) as u32
            });
            for b in &p.blobs {
                blobs.entry((b.ty, b.id)).or_insert(BaselineSlot {
                    pack: slot,
                    compression: b.compression,
                    offset: b.offset,
                    stored_len: b.stored_len,
                    raw_len: b.raw_len,
                });
            }
        }
    }
    drop(files);
    let secs = t.elapsed().as_secs_f64();
    let n = blobs.len();
    let (rss, hwm) = memory();
    println!(
        "baseline (every file decoded, then a HashMap): {n} blobs in {secs:.2} s; resident {:.1} MiB ({:.1} bytes per blob), peak {:.1} MiB above the baseline",
        (rss - rss0) as f64 / MIB,
        (rss - rss0) as f64 / n as f64,
        (hwm - rss0) as f64 / MIB,
    );
    let present = sample_ids(lookups, n as u64, 0);
    let t = Instant::now();
    let found = present
        .iter()
        .filter(|id| {
            blobs.contains_key(&(BlobType::Data, **id))
                || blobs.contains_key(&(BlobType::Tree, **id))
        })
        .count();
    assert_eq!(found, lookups);
    println!(
        "baseline lookups on one thread: contains(present, data then tree) {:.2} M/s",
        lookups as f64 / t.elapsed().as_secs_f64() / 1e6
    );
    std::hint::black_box(&packs);
    Ok(())
}

/// `count` IDs of synthetic blobs numbered `from..from + n`, chosen at random (seeded).
fn sample_ids(count: usize, n: u64, from: u64) -> Vec<Id> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7 + from);
    (0..count)
        .map(|_| blob_id(from + rng.gen_range(0..n)))
        .collect()
}

fn load(dir: &Path, lookups: usize, baseline_mode: bool) -> Result<(), Box<dyn std::error::Error>> {
    let backend = Arc::new(LocalBackend::new(dir));
    let repo = Repository::open(backend, PASSWORD)?;
    let (rss0, _) = memory();
    reset_peak();
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    if baseline_mode {
        return Ok(baseline(&repo, rss0, lookups)?);
    }
    // The reader's load: the same compact loader a writer uses, without the pack listing
    // that would find these synthetic packs missing.
    let index = repo.load_index()?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let (rss1, hwm) = memory();
    let n = index.len();
    println!("{index:?}");
    println!(
        "loaded {n} blobs in {secs:.2} s ({cpu:.2} s CPU); resident {:.1} MiB ({:.1} bytes per blob; process {:.1} MiB), peak {:.1} MiB above the baseline of {:.1} MiB",
        (rss1 - rss0) as f64 / MIB,
        (rss1 - rss0) as f64 / n as f64,
        rss1 as f64 / MIB,
        (hwm - rss0) as f64 / MIB,
        rss0 as f64 / MIB,
    );

    // Lookups: IDs generated before timing; present ones checked against where they are.
    let present = sample_ids(lookups, n as u64, 0);
    let absent = sample_ids(lookups, n as u64, n as u64);
    let either = |id: &Id| index.contains(BlobType::Data, id) || index.contains(BlobType::Tree, id);
    let t = Instant::now();
    let found = present.iter().filter(|id| either(id)).count();
    let present_rate = lookups as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let false_hits = absent
        .iter()
        .filter(|id| index.contains(BlobType::Data, id))
        .count();
    let absent_rate = lookups as f64 / t.elapsed().as_secs_f64();
    assert_eq!(found, lookups, "every present blob found");
    assert_eq!(false_hits, 0, "no absent blob found");
    let t = Instant::now();
    let mut bytes = 0u64;
    for id in &present {
        let loc = index
            .get(BlobType::Data, id)
            .or_else(|| index.get(BlobType::Tree, id))
            .expect("present");
        bytes += u64::from(loc.entry.raw_len);
    }
    let get_rate = lookups as f64 / t.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    println!(
        "lookups on one thread: contains(present, data then tree) {:.2} M/s, contains(absent) {:.2} M/s, get(present) {:.2} M/s",
        present_rate / 1e6,
        absent_rate / 1e6,
        get_rate / 1e6
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: index_scale create DIR [--blobs N] [--per-pack P] [--packs-per-file F] [--dups D] | index_scale load DIR [--lookups N] [--baseline]";
    let (Some(cmd), Some(dir)) = (args.first(), args.get(1)) else {
        return Err(usage.into());
    };
    let opt = |name: &str, default: u64| -> Result<u64, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or(usage)?.replace('_', "").parse()?),
            None => Ok(default),
        }
    };
    let dir = Path::new(dir);
    match cmd.as_str() {
        "create" => create(
            dir,
            &Shape {
                blobs: opt("--blobs", 10_000_000)?,
                per_pack: opt("--per-pack", 1000)?.max(1),
                packs_per_file: opt("--packs-per-file", 5)?.max(1),
                dups: opt("--dups", 0)?,
            },
        ),
        "load" => load(
            dir,
            opt("--lookups", 1_000_000)? as usize,
            args.iter().any(|a| a == "--baseline"),
        ),
        _ => Err(usage.into()),
    }
}
