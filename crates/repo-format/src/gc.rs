//! Garbage-collection state shared between writers and the pruner (SPEC.md §12): session
//! files that announce running writers, and gc markers that list packs pending deletion.

use crate::codec::{invalid, DecodeError, Reader, Writer};
use crate::id::Id;

/// Session encoding version written. Version 1 (no process identity) is still read.
pub const SESSION_VERSION: u8 = 2;
/// Marker encoding version.
pub const MARKER_VERSION: u8 = 1;

/// Who runs a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A backup or any other writer of new data.
    Writer = 1,
    /// A prune.
    Prune = 2,
}

/// A running writer or pruner, as announced in `sessions/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    /// Random, constant for the life of the session.
    pub session_id: [u8; 16],
    /// Writer or prune.
    pub role: Role,
    /// Host name.
    pub host: String,
    /// Process ID.
    pub pid: u32,
    /// When the session started (writer's clock), ns since the epoch.
    pub start_ns: i64,
    /// When this file was written (writer's clock), ns since the epoch.
    pub heartbeat_ns: i64,
    /// Which process on which running machine wrote it (boot ID, PID namespace, process
    /// start time), so a process on the same machine can tell that the writer has died
    /// without waiting for the session to go stale; empty when unknown (SPEC.md §12.2).
    pub process: String,
}

impl Session {
    /// Plaintext encoding. A host name or process identity longer than its 16-bit length
    /// field is an error (SPEC.md §2: never truncated).
    pub fn encode(&self) -> Result<Vec<u8>, crate::Error> {
        for (field, v) in [("host", &self.host), ("process", &self.process)] {
            if v.len() > u16::MAX as usize {
                return Err(crate::Error::Encode {
                    what: "session",
                    detail: format!("{field} is {} bytes, at most 65535 fit", v.len()),
                });
            }
        }
        let mut w = Writer::new();
        w.u8(SESSION_VERSION);
        w.raw(&self.session_id);
        w.u8(self.role as u8);
        w.bytes16(self.host.as_bytes());
        w.u32(self.pid);
        w.i64(self.start_ns);
        w.i64(self.heartbeat_ns);
        w.bytes16(self.process.as_bytes());
        Ok(w.finish())
    }

    /// Decodes a session plaintext.
    pub fn decode(buf: &[u8]) -> Result<Session, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if !(1..=SESSION_VERSION).contains(&version) {
            return Err(DecodeError::Version {
                what: "session",
                found: version,
                supported: SESSION_VERSION,
            });
        }
        let mut session_id = [0u8; 16];
        session_id.copy_from_slice(r.take(16)?);
        let role = match r.u8()? {
            1 => Role::Writer,
            2 => Role::Prune,
            v => return Err(invalid("session role", format!("{v}"))),
        };
        let host = r.str16("host")?;
        let (pid, start_ns, heartbeat_ns) = (r.u32()?, r.i64()?, r.i64()?);
        let process = if version >= 2 {
            r.str16("process")?
        } else {
            String::new()
        };
        let s = Session {
            session_id,
            role,
            host,
            pid,
            start_ns,
            heartbeat_ns,
            process,
        };
        r.finish()?;
        Ok(s)
    }
}

/// Packs pending deletion, with the time they were marked.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct GcMarker {
    /// The pruner's clock just before the marker was written, ns since the epoch.
    pub mark_ns: i64,
    /// Markers this one replaces.
    pub supersedes: Vec<Id>,
    /// Packs pending deletion.
    pub packs: Vec<Id>,
}

impl GcMarker {
    /// Plaintext encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(MARKER_VERSION);
        w.i64(self.mark_ns);
        w.u32(self.supersedes.len() as u32);
        for s in &self.supersedes {
            w.id(s);
        }
        w.u32(self.packs.len() as u32);
        for p in &self.packs {
            w.id(p);
        }
        w.finish()
    }

    /// Decodes a marker plaintext.
    pub fn decode(buf: &[u8]) -> Result<GcMarker, DecodeError> {
        let mut r = Reader::new(buf);
        r.version("gc marker", MARKER_VERSION)?;
        let mark_ns = r.i64()?;
        let n = r.count("supersedes count", 32)?;
        let supersedes = (0..n).map(|_| r.id()).collect::<Result<_, _>>()?;
        let n = r.count("pack count", 32)?;
        let packs = (0..n).map(|_| r.id()).collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(GcMarker {
            mark_ns,
            supersedes,
            packs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn over_long_session_strings_are_refused_not_truncated() {
        let s = Session {
            session_id: [0; 16],
            role: Role::Writer,
            host: "h".repeat(65_536),
            pid: 1,
            start_ns: 0,
            heartbeat_ns: 0,
            process: String::new(),
        };
        assert!(matches!(
            s.encode(),
            Err(crate::Error::Encode {
                what: "session",
                ..
            })
        ));
        let ok = Session {
            host: "h".repeat(65_535),
            ..s
        };
        assert_eq!(Session::decode(&ok.encode().unwrap()).unwrap(), ok);
    }

    proptest! {
        #[test]
        fn session_round_trip(id: [u8; 16], prune: bool, host in "[a-z0-9.-]{0,30}", pid: u32, s: i64, h: i64, process in "[a-z0-9: -]{0,60}") {
            let x = Session { session_id: id, role: if prune { Role::Prune } else { Role::Writer }, host, pid, start_ns: s, heartbeat_ns: h, process };
            let enc = x.encode().unwrap();
            prop_assert_eq!(Session::decode(&enc).unwrap(), x);
            for cut in 0..enc.len() {
                prop_assert!(Session::decode(&enc[..cut]).is_err());
            }
        }

        /// Version 1 sessions (without the process identity) still decode.
        #[test]
        fn session_v1_decodes(id: [u8; 16], pid: u32, s: i64, h: i64) {
            let mut w = Writer::new();
            w.u8(1);
            w.raw(&id);
            w.u8(1);
            w.bytes16(b"host");
            w.u32(pid);
            w.i64(s);
            w.i64(h);
            let x = Session::decode(&w.finish()).unwrap();
            prop_assert_eq!(x, Session { session_id: id, role: Role::Writer, host: "host".into(), pid, start_ns: s, heartbeat_ns: h, process: String::new() });
        }

        #[test]
        fn marker_round_trip(t: i64, sup in proptest::collection::vec(any::<[u8; 32]>(), 0..3), packs in proptest::collection::vec(any::<[u8; 32]>(), 0..20)) {
            let m = GcMarker { mark_ns: t, supersedes: sup.into_iter().map(Id).collect(), packs: packs.into_iter().map(Id).collect() };
            let enc = m.encode();
            prop_assert_eq!(GcMarker::decode(&enc).unwrap(), m);
            for cut in 0..enc.len() {
                prop_assert!(GcMarker::decode(&enc[..cut]).is_err());
            }
        }
    }
}
