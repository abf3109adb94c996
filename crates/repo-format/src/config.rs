//! The repository config: parameters fixed at `init`, its generations and the format
//! features turned on (SPEC.md §3.3, §13).
//!
//! A config file is never modified. Turning a feature on writes a **new** config file of
//! the next generation (`holdfast migrate`); a reader takes the highest generation. The
//! parameters (repository ID, chunk sizes, pack size) are the same in every generation,
//! and two files that disagree on them, or two different files of the highest generation,
//! make the repository damaged rather than ambiguous.
//!
//! Features come in three classes, as in ext4 and borg: *compatible* ones an older reader
//! ignores, *read-only compatible* ones it may read but not write, and *incompatible* ones
//! it must refuse. Each is stored with its name and the holdfast version that introduced
//! it, so that a reader which does not know a feature can still say which one it is and
//! which version to upgrade to.

use crate::codec::{invalid, DecodeError, Reader, Writer};
use crate::error::Error;
use crate::id::Id;

/// Newest config encoding version. Version 1 (no generation, no features) is still read,
/// and written by nothing any more.
pub const CONFIG_VERSION: u8 = 2;

/// How an older reader must treat a feature it does not know (SPEC.md §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureClass {
    /// Ignored by readers and writers that do not know it.
    Compatible = 1,
    /// Readers that do not know it may read the repository but must not write to it.
    ReadOnlyCompatible = 2,
    /// Readers that do not know it must refuse the repository.
    Incompatible = 3,
}

impl FeatureClass {
    /// The class of an encoded byte.
    pub fn from_u8(b: u8) -> Option<FeatureClass> {
        match b {
            1 => Some(FeatureClass::Compatible),
            2 => Some(FeatureClass::ReadOnlyCompatible),
            3 => Some(FeatureClass::Incompatible),
            _ => None,
        }
    }

    /// Its name as shown to users.
    pub fn name(self) -> &'static str {
        match self {
            FeatureClass::Compatible => "compatible",
            FeatureClass::ReadOnlyCompatible => "read-only compatible",
            FeatureClass::Incompatible => "incompatible",
        }
    }
}

/// A feature as a config records it: enough for a reader that does not know it to name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FeatureEntry {
    /// Its name, `[a-z0-9-]`, 1 to 64 bytes.
    pub name: String,
    /// What an older reader must do about it.
    pub class: FeatureClass,
    /// The holdfast version that introduced it ("upgrade to at least this").
    pub since: String,
    /// When it was turned on (the migrating process's estimate of the storage's clock).
    pub enabled_ns: i64,
}

/// A feature this build of holdfast implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// Its name in configs and on the command line.
    pub name: &'static str,
    /// Its class.
    pub class: FeatureClass,
    /// The holdfast version that introduced it.
    pub since: &'static str,
    /// What it changes, in a line (`holdfast migrate --list`).
    pub what: &'static str,
    /// Whether `init` turns it on in new repositories.
    pub at_init: bool,
}

impl Feature {
    /// The feature this build knows by `name`.
    pub fn by_name(name: &str) -> Option<Feature> {
        KNOWN_FEATURES.iter().copied().find(|f| f.name == name)
    }

    /// The config entry that turns it on at `now_ns`.
    pub fn entry(&self, now_ns: i64) -> FeatureEntry {
        FeatureEntry {
            name: self.name.into(),
            class: self.class,
            since: self.since.into(),
            enabled_ns: now_ns,
        }
    }
}

/// Sessions of version 2 (a `process` field that lets a reader on the same machine see
/// that a session's process is gone, SPEC.md §12.2). Compatible: a reader that predates
/// it treats such a session as an unreadable, live one until it is 70 minutes old, which
/// only holds its sweeps back. Writers write version-2 sessions in every repository; the
/// bit records the change, which format 1 made without one.
pub const SESSION_V2: Feature = Feature {
    name: "session-v2",
    class: FeatureClass::Compatible,
    since: "0.1.0",
    what: "sessions of version 2, naming the writing process (a killed backup holds prunes back for seconds, not an hour)",
    at_init: true,
};

/// Snapshots of version 2: host sequence numbers and copy origins (SPEC.md §9.1).
/// Incompatible: an older holdfast cannot read such a snapshot.
pub const SNAPSHOT_V2: Feature = Feature {
    name: "snapshot-v2",
    class: FeatureClass::Incompatible,
    since: "0.2.0",
    what: "snapshots of version 2: a per-host sequence number (a removed snapshot is noticed) and the origin of copied snapshots",
    at_init: true,
};

/// Every feature this build knows, by name. Adding one is a constant and a line here.
pub const KNOWN_FEATURES: &[Feature] = &[SESSION_V2, SNAPSHOT_V2];

/// Parameters every writer must use, and the generation and features of this config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Config {
    /// Encoding version of this config file: 1 or 2.
    pub version: u8,
    /// Random repository ID (names the local cache, tells repositories apart).
    pub repo_id: Id,
    /// Minimum chunk size.
    pub chunk_min: u32,
    /// Average chunk size (power of two).
    pub chunk_avg: u32,
    /// Maximum chunk size.
    pub chunk_max: u32,
    /// Target size of a pack in bytes.
    pub pack_size: u32,
    /// Creation time of the repository, ns since the epoch.
    pub created_ns: i64,
    /// The generation: 1 for the first config (and for every version-1 config), one more
    /// for each config that supersedes another.
    pub generation: u64,
    /// When this generation was written (version 1: `created_ns`).
    pub written_ns: i64,
    /// Features turned on, sorted by name (version 1: none).
    pub features: Vec<FeatureEntry>,
}

/// Fewest bytes one encoded feature entry takes (two empty strings, class, time).
const MIN_FEATURE_LEN: usize = 2 + 1 + 2 + 8;

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Config {
    /// A version-2 config of generation 1 for a new repository, with the features `init`
    /// turns on.
    pub fn new(repo_id: Id, chunk: (u32, u32, u32), pack_size: u32, now_ns: i64) -> Config {
        let mut features: Vec<FeatureEntry> = KNOWN_FEATURES
            .iter()
            .filter(|f| f.at_init)
            .map(|f| f.entry(now_ns))
            .collect();
        features.sort_by(|a, b| a.name.cmp(&b.name));
        Config {
            version: CONFIG_VERSION,
            repo_id,
            chunk_min: chunk.0,
            chunk_avg: chunk.1,
            chunk_max: chunk.2,
            pack_size,
            created_ns: now_ns,
            generation: 1,
            written_ns: now_ns,
            features,
        }
    }

    /// The config of the next generation with `feature` turned on as well (and, when this
    /// one is of version 1, [`SESSION_V2`], which every version-2 config records).
    pub fn with_feature(&self, feature: Feature, now_ns: i64) -> Config {
        let mut features = self.features.clone();
        let mut add = |f: Feature| {
            if !features.iter().any(|e| e.name == f.name) {
                features.push(f.entry(now_ns));
            }
        };
        add(feature);
        add(SESSION_V2);
        features.sort_by(|a, b| a.name.cmp(&b.name));
        Config {
            version: CONFIG_VERSION,
            generation: self.generation + 1,
            written_ns: now_ns,
            features,
            ..self.clone()
        }
    }

    /// Whether a feature this build knows is on.
    pub fn has(&self, f: Feature) -> bool {
        self.has_feature(f.name)
    }

    /// Whether the feature named `name` is on.
    pub fn has_feature(&self, name: &str) -> bool {
        self.features.iter().any(|e| e.name == name)
    }

    /// Features on that this build does not know.
    pub fn unknown_features(&self) -> impl Iterator<Item = &FeatureEntry> {
        self.features
            .iter()
            .filter(|e| Feature::by_name(&e.name).is_none())
    }

    /// Refuses a repository that uses an incompatible feature this build does not know.
    pub fn check_readable(&self) -> Result<(), Error> {
        match self
            .unknown_features()
            .find(|e| e.class == FeatureClass::Incompatible)
        {
            Some(e) => Err(Error::UnknownFeature {
                feature: e.name.clone(),
                since: e.since.clone(),
                read_only: false,
            }),
            None => Ok(()),
        }
    }

    /// Refuses to write to a repository that uses a feature this build does not know and
    /// may not ignore when writing (incompatible or read-only compatible).
    pub fn check_writable(&self) -> Result<(), Error> {
        self.check_readable()?;
        match self
            .unknown_features()
            .find(|e| e.class == FeatureClass::ReadOnlyCompatible)
        {
            Some(e) => Err(Error::UnknownFeature {
                feature: e.name.clone(),
                since: e.since.clone(),
                read_only: true,
            }),
            None => Ok(()),
        }
    }

    /// Plaintext encoding, of [`Config::version`]'s layout (a version-1 config has no
    /// generation, time or features to encode).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.version);
        w.id(&self.repo_id);
        w.u32(self.chunk_min);
        w.u32(self.chunk_avg);
        w.u32(self.chunk_max);
        w.u32(self.pack_size);
        w.i64(self.created_ns);
        if self.version >= 2 {
            w.u64(self.generation);
            w.i64(self.written_ns);
            w.u32(self.features.len() as u32);
            for f in &self.features {
                w.str16(&f.name);
                w.u8(f.class as u8);
                w.str16(&f.since);
                w.i64(f.enabled_ns);
            }
        }
        w.finish()
    }

    /// Decodes a config plaintext of version 1 or 2.
    pub fn decode(buf: &[u8]) -> Result<Config, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != 1 && version != 2 {
            return Err(DecodeError::Version {
                what: "config",
                found: version,
                supported: CONFIG_VERSION,
            });
        }
        let repo_id = r.id()?;
        let (chunk_min, chunk_avg, chunk_max, pack_size) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
        let created_ns = r.i64()?;
        let mut c = Config {
            version,
            repo_id,
            chunk_min,
            chunk_avg,
            chunk_max,
            pack_size,
            created_ns,
            generation: 1,
            written_ns: created_ns,
            features: Vec::new(),
        };
        if version == 2 {
            c.generation = r.u64()?;
            if c.generation == 0 {
                return Err(invalid("generation", "0 (the first is 1)"));
            }
            c.written_ns = r.i64()?;
            let n = r.count("feature count", MIN_FEATURE_LEN)?;
            for _ in 0..n {
                let name = r.str16("feature name")?;
                if !valid_name(&name) {
                    return Err(invalid(
                        "feature name",
                        format!("{name:?} is not 1 to 64 of a-z, 0-9 and -"),
                    ));
                }
                let class = r.u8()?;
                let class = FeatureClass::from_u8(class)
                    .ok_or_else(|| invalid("feature class", format!("{class}")))?;
                let since = r.str16("feature since")?;
                let enabled_ns = r.i64()?;
                if let Some(last) = c.features.last() {
                    if last.name >= name {
                        return Err(invalid(
                            "feature name",
                            format!("{name:?} after {:?} (names must ascend)", last.name),
                        ));
                    }
                }
                c.features.push(FeatureEntry {
                    name,
                    class,
                    since,
                    enabled_ns,
                });
            }
        }
        r.finish()?;
        let (min, avg, max) = (c.chunk_min, c.chunk_avg, c.chunk_max);
        if !(64 <= min
            && min <= avg
            && avg <= max
            && max <= 64 * 1024 * 1024
            && avg.is_power_of_two())
        {
            return Err(invalid("chunk sizes", format!("min {min}, avg {avg}, max {max} are not 64 <= min <= avg <= max <= 64 MiB with avg a power of two")));
        }
        if c.pack_size < 1024 * 1024 || c.pack_size > 1024 * 1024 * 1024 {
            return Err(invalid(
                "pack size",
                format!("{} outside 1 MiB..=1 GiB", c.pack_size),
            ));
        }
        Ok(c)
    }

    /// Whether two configs describe the same repository (every generation must).
    fn same_repository(&self, o: &Config) -> bool {
        (
            self.repo_id,
            self.chunk_min,
            self.chunk_avg,
            self.chunk_max,
            self.pack_size,
        ) == (
            o.repo_id,
            o.chunk_min,
            o.chunk_avg,
            o.chunk_max,
            o.pack_size,
        )
    }
}

/// One config file as read from `config/`.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Its name.
    pub id: Id,
    /// Its content.
    pub config: Config,
    /// When it landed on the storage (server clock), where the backend reports it.
    pub landed_ns: Option<i64>,
}

/// Every config file of a repository, the current one (highest generation) last.
#[derive(Debug, Clone)]
pub struct ConfigSet {
    files: Vec<ConfigFile>,
}

impl ConfigSet {
    /// Orders the files by generation and checks that they describe one repository with
    /// one config per highest generation (SPEC.md §3.3); anything else is damage, named
    /// by both files.
    pub fn select(mut files: Vec<ConfigFile>) -> Result<ConfigSet, Error> {
        files.sort_by_key(|f| (f.config.generation, f.id));
        let Some(top) = files.last() else {
            return Err(Error::Missing {
                kind: "config",
                name: "(none in config/)".into(),
            });
        };
        if let Some(other) = files
            .iter()
            .find(|f| !f.config.same_repository(&top.config))
        {
            return Err(Error::Corrupt {
                kind: "config",
                name: format!("{} and {}", other.id, top.id),
                detail: "they disagree on the repository ID, the chunk sizes or the pack size, which every generation of the config must keep: one of them is not this repository's (restore config/ from a copy)".into(),
            });
        }
        if let [.., a, b] = files.as_slice() {
            if a.config.generation == b.config.generation {
                return Err(Error::Corrupt {
                    kind: "config",
                    name: format!("{} and {}", a.id, b.id),
                    detail: format!(
                        "both are generation {}, the highest: a repository has one config per generation, so which is current is unknown (remove the one that `holdfast migrate` did not write, or restore config/ from a copy)",
                        b.config.generation
                    ),
                });
            }
        }
        Ok(ConfigSet { files })
    }

    /// The config in force: the highest generation.
    pub fn current(&self) -> &ConfigFile {
        self.files.last().expect("a config set is never empty")
    }

    /// Every file, lowest generation first.
    pub fn files(&self) -> &[ConfigFile] {
        &self.files
    }

    /// From when the feature named `name` could be seen by a writer: the later of the
    /// time it was turned on and the time the first config listing it landed on the
    /// storage (the write may have been delayed after its time was read, as with gc
    /// markers, SPEC.md §12.3). `None` if it is off.
    pub fn feature_since(&self, name: &str) -> Option<i64> {
        let first = self.files.iter().find(|f| f.config.has_feature(name))?;
        let entry = first.config.features.iter().find(|e| e.name == name)?;
        let written = entry.enabled_ns.max(first.config.written_ns);
        Some(first.landed_ns.map_or(written, |l| l.max(written)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> Config {
        Config {
            version: 1,
            repo_id: Id([7; 32]),
            chunk_min: 512 << 10,
            chunk_avg: 1 << 20,
            chunk_max: 8 << 20,
            pack_size: 16 << 20,
            created_ns: 5,
            generation: 1,
            written_ns: 5,
            features: vec![],
        }
    }

    fn arb_entry() -> impl Strategy<Value = FeatureEntry> {
        ("[a-z0-9-]{1,64}", 1u8..=3, "\\PC{0,20}", any::<i64>()).prop_map(|(name, c, since, t)| {
            FeatureEntry {
                name,
                class: FeatureClass::from_u8(c).unwrap(),
                since,
                enabled_ns: t,
            }
        })
    }

    proptest! {
        #[test]
        fn config_round_trip(id: [u8; 32], bits in 7u32..=24, a in 64u32..=1 << 24, c in 0u32..=1 << 24, p in (1u32 << 20)..(1u32 << 30), t: i64) {
            let avg = 1u32 << bits;
            let (min, max) = (a.min(avg), (avg + c).min(64 << 20));
            let cfg = Config { version: 1, repo_id: Id(id), chunk_min: min, chunk_avg: avg, chunk_max: max, pack_size: p, created_ns: t, generation: 1, written_ns: t, features: vec![] };
            let enc = cfg.encode();
            prop_assert_eq!(Config::decode(&enc).unwrap(), cfg);
            prop_assert!(Config::decode(&enc[..enc.len() - 1]).is_err());
        }

        #[test]
        fn config_v2_round_trip(id: [u8; 32], gen in 1u64.., t: i64, w: i64, entries in proptest::collection::vec(arb_entry(), 0..8)) {
            let mut features = entries;
            features.sort_by(|a, b| a.name.cmp(&b.name));
            features.dedup_by(|a, b| a.name == b.name);
            let cfg = Config { version: 2, repo_id: Id(id), created_ns: t, generation: gen, written_ns: w, features, ..base() };
            let enc = cfg.encode();
            prop_assert_eq!(Config::decode(&enc).unwrap(), cfg.clone());
            for cut in [1, 8, enc.len() - 57] {
                prop_assert!(Config::decode(&enc[..enc.len() - cut]).is_err());
            }
            let mut longer = enc.clone();
            longer.push(0);
            prop_assert!(Config::decode(&longer).is_err());
            if cfg.features.len() >= 2 {
                // Out of order names are refused.
                let mut swapped = cfg.clone();
                swapped.features.swap(0, 1);
                prop_assert!(Config::decode(&swapped.encode()).is_err());
            }
        }
    }

    #[test]
    fn impossible_parameters_are_rejected() {
        let ok = base();
        assert!(Config::decode(&ok.encode()).is_ok());
        for bad in [
            Config {
                chunk_avg: 3 << 19,
                ..ok.clone()
            },
            Config {
                chunk_min: 2 << 20,
                ..ok.clone()
            },
            Config {
                chunk_max: 128 << 20,
                ..ok.clone()
            },
            Config {
                pack_size: 1000,
                ..ok.clone()
            },
            Config {
                version: 2,
                generation: 0,
                ..ok.clone()
            },
        ] {
            assert!(Config::decode(&bad.encode()).is_err(), "{bad:?}");
        }
        let mut v3 = ok.encode();
        v3[0] = 3;
        assert!(matches!(
            Config::decode(&v3),
            Err(DecodeError::Version { found: 3, .. })
        ));
        let entry = |name: &str, class| FeatureEntry {
            name: name.into(),
            class,
            since: "9.9.9".into(),
            enabled_ns: 0,
        };
        for bad_name in ["", "Upper", "a b", &"x".repeat(65)] {
            let c = Config {
                version: 2,
                features: vec![entry(bad_name, FeatureClass::Compatible)],
                ..ok.clone()
            };
            assert!(Config::decode(&c.encode()).is_err(), "{bad_name:?}");
        }
        let dup = Config {
            version: 2,
            features: vec![
                entry("a", FeatureClass::Compatible),
                entry("a", FeatureClass::Compatible),
            ],
            ..ok.clone()
        };
        assert!(Config::decode(&dup.encode()).is_err());
        let mut bad_class = Config {
            version: 2,
            features: vec![entry("a", FeatureClass::Compatible)],
            ..ok
        }
        .encode();
        let at = bad_class.len() - 8 - 2 - 5 - 1;
        assert_eq!(bad_class[at], 1);
        bad_class[at] = 4;
        assert!(Config::decode(&bad_class).is_err());
    }

    fn file(n: u8, c: Config) -> ConfigFile {
        ConfigFile {
            id: Id([n; 32]),
            config: c,
            landed_ns: None,
        }
    }

    #[test]
    fn the_highest_generation_wins() {
        let v1 = base();
        let g2 = v1.with_feature(SNAPSHOT_V2, 10);
        let g3 = Config {
            features: vec![],
            ..g2.with_feature(SESSION_V2, 20)
        };
        assert_eq!((g2.generation, g2.version), (2, 2));
        assert!(g2.has(SNAPSHOT_V2) && g2.has(SESSION_V2));
        // Listing order does not matter.
        let set = ConfigSet::select(vec![
            file(3, g3.clone()),
            file(1, v1.clone()),
            file(2, g2.clone()),
        ])
        .unwrap();
        assert_eq!(set.current().config, g3);
        assert_eq!(set.files().len(), 3);
        assert_eq!(set.feature_since("snapshot-v2"), Some(10));
        let set = ConfigSet::select(vec![file(9, v1.clone())]).unwrap();
        assert_eq!(set.current().config.generation, 1);
        assert!(!set.current().config.has(SESSION_V2));
        assert_eq!(set.feature_since("snapshot-v2"), None);
        // Landing later than the recorded time counts from the landing.
        let mut late = file(2, g2.clone());
        late.landed_ns = Some(99);
        let set = ConfigSet::select(vec![file(1, v1.clone()), late]).unwrap();
        assert_eq!(set.feature_since("snapshot-v2"), Some(99));
    }

    #[test]
    fn ties_and_disagreements_are_damage_naming_both_files() {
        let v1 = base();
        let g2 = v1.with_feature(SNAPSHOT_V2, 10);
        let other_g2 = v1.with_feature(SESSION_V2, 11);
        let e = ConfigSet::select(vec![
            file(1, v1.clone()),
            file(2, g2.clone()),
            file(3, other_g2),
        ])
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Corrupt { kind: "config", .. }), "{msg}");
        assert!(
            msg.contains(&Id([2; 32]).to_string())
                && msg.contains(&Id([3; 32]).to_string())
                && msg.contains("generation 2"),
            "{msg}"
        );
        // Two version-1 configs are a tie at generation 1, as the one-config rule of
        // format 1 always said.
        let v1b = Config {
            created_ns: 6,
            written_ns: 6,
            ..v1.clone()
        };
        assert!(ConfigSet::select(vec![file(1, v1.clone()), file(4, v1b)]).is_err());
        // A tie below the highest generation does not matter... but a disagreement does.
        for bad in [
            Config {
                repo_id: Id([8; 32]),
                ..g2.clone()
            },
            Config {
                chunk_min: 256 << 10,
                ..g2.clone()
            },
            Config {
                pack_size: 32 << 20,
                ..g2.clone()
            },
        ] {
            let e = ConfigSet::select(vec![file(1, v1.clone()), file(5, bad)]).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("disagree")
                    && msg.contains(&Id([1; 32]).to_string())
                    && msg.contains(&Id([5; 32]).to_string()),
                "{msg}"
            );
        }
        assert!(matches!(
            ConfigSet::select(vec![]),
            Err(Error::Missing { .. })
        ));
    }

    #[test]
    fn unknown_features_by_class() {
        let unknown = |class| Config {
            version: 2,
            features: vec![FeatureEntry {
                name: "zz-future".into(),
                class,
                since: "7.1.0".into(),
                enabled_ns: 0,
            }],
            ..base()
        };
        // Compatible: ignored for reading and writing.
        let c = unknown(FeatureClass::Compatible);
        assert!(c.check_readable().is_ok() && c.check_writable().is_ok());
        // Read-only compatible: read, not written.
        let c = unknown(FeatureClass::ReadOnlyCompatible);
        assert!(c.check_readable().is_ok());
        let msg = c.check_writable().unwrap_err().to_string();
        assert!(
            msg.contains("`zz-future`")
                && msg.contains("holdfast 7.1.0")
                && msg.contains("upgrade holdfast")
                && msg.contains("can read"),
            "{msg}"
        );
        // Incompatible: refused.
        let c = unknown(FeatureClass::Incompatible);
        let msg = c.check_readable().unwrap_err().to_string();
        assert_eq!(
            msg,
            "this repository uses feature `zz-future`, added in holdfast 7.1.0: upgrade holdfast"
        );
        assert!(c.check_writable().is_err());
        // Known features, whatever their class, are fine.
        let known = base().with_feature(SNAPSHOT_V2, 1);
        assert!(known.check_writable().is_ok());
    }

    #[test]
    fn the_registry_is_sorted_valid_and_init_turns_on_the_current_features() {
        for f in KNOWN_FEATURES {
            assert!(valid_name(f.name), "{}", f.name);
            assert_eq!(Feature::by_name(f.name), Some(*f));
        }
        let c = Config::new(Id([1; 32]), (512 << 10, 1 << 20, 8 << 20), 16 << 20, 3);
        let names: Vec<&str> = c.features.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["session-v2", "snapshot-v2"]);
        assert_eq!(Config::decode(&c.encode()).unwrap(), c);
        assert_eq!((c.version, c.generation), (2, 1));
    }
}
