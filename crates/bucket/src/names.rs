//! Object keys as snapshot paths, and back (SPEC.md, "Bucket snapshots").
//!
//! A key below the backed-up prefix is split at `/`; each piece is one path component.
//! Pieces a snapshot cannot hold as a name (empty ones from `//`, a leading `/` or a
//! trailing `/` of a directory marker, `.` and `..`) and pieces containing `%` are
//! escaped: every `%` becomes `%25`, every `.` of `.` or `..` becomes `%2E`, and the empty
//! piece becomes `%`. Other pieces are kept as they are, so ordinary keys give ordinary
//! file names. A key that is both an object and a prefix of other keys (`a` and `a/b`)
//! gives a file `a` and a directory `a%`: a `%` that ends a name and is not the whole name
//! marks such a directory. No escaped name can be produced from another piece, so the
//! mapping is reversible ([`decode`]), and it keeps the byte order of ordinary pieces
//! (the listing's order is the snapshot's almost everywhere).

/// The escape character.
const ESC: u8 = b'%';

/// Whether a piece of a key is kept as it is.
pub fn is_plain(piece: &[u8]) -> bool {
    holdfast_repo::tree::is_safe_name(piece) && !piece.contains(&ESC)
}

/// The name recorded for one piece of a key (not yet marked as a directory that is also
/// an object). `None` for a piece with a NUL byte, which no S3 listing can return.
pub fn encode(piece: &[u8]) -> Option<Vec<u8>> {
    if piece.contains(&0) {
        return None;
    }
    if is_plain(piece) {
        return Some(piece.to_vec());
    }
    if piece.is_empty() {
        return Some(vec![ESC]);
    }
    let dots = piece == b"." || piece == b"..";
    let mut out = Vec::with_capacity(piece.len() + 4);
    for &b in piece {
        match b {
            ESC => out.extend_from_slice(b"%25"),
            b'.' if dots => out.extend_from_slice(b"%2E"),
            _ => out.push(b),
        }
    }
    Some(out)
}

/// The name of a directory for the key piece `piece`; `also_object` when an object has
/// the key of the directory itself (`a` beside `a/b`).
pub fn encode_dir(piece: &[u8], also_object: bool) -> Option<Vec<u8>> {
    let mut n = encode(piece)?;
    if also_object {
        n.push(ESC);
    }
    Some(n)
}

/// The key piece a recorded name stands for; `None` for a name no key gives (a `%` not
/// followed by two hex digits, except as described in the module documentation).
pub fn decode(name: &[u8]) -> Option<Vec<u8>> {
    // A directory that is also an object: the name without its mark.
    let base = match name.strip_suffix(&[ESC]) {
        Some(rest) if !rest.is_empty() => rest,
        _ => name,
    };
    if base == [ESC] {
        return Some(Vec::new());
    }
    let mut out = Vec::with_capacity(base.len());
    let mut i = 0;
    while i < base.len() {
        if base[i] == ESC {
            let hex = base.get(i + 1..i + 3)?;
            let v = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())?;
            out.push(v);
            i += 3;
        } else {
            out.push(base[i]);
            i += 1;
        }
    }
    // Only names `encode` makes stand for a piece: one spelling per piece.
    (encode(&out)? == base).then_some(out)
}

/// The path a key (relative to the backed-up prefix) is recorded at, one name per piece;
/// `None` for a key with a NUL byte.
pub fn key_to_path(key: &str, dirs_also_objects: impl Fn(&str) -> bool) -> Option<Vec<Vec<u8>>> {
    let pieces: Vec<&str> = key.split('/').collect();
    let mut path = Vec::with_capacity(pieces.len());
    let mut at = 0usize;
    for (i, p) in pieces.iter().enumerate() {
        if i + 1 < pieces.len() {
            let dir_key = &key[..at + p.len()];
            path.push(encode_dir(p.as_bytes(), dirs_also_objects(dir_key))?);
        } else {
            path.push(encode(p.as_bytes())?);
        }
        at += p.len() + 1;
    }
    Some(path)
}

/// The key (relative to the prefix a snapshot is restored under) of a recorded path;
/// `None` when a name was not made by [`encode`] or [`encode_dir`] (or the key would not be
/// UTF-8).
pub fn path_to_key(path: &[Vec<u8>]) -> Option<String> {
    let mut key = Vec::new();
    for (i, name) in path.iter().enumerate() {
        if i > 0 {
            key.push(b'/');
        }
        key.extend(decode(name)?);
    }
    String::from_utf8(key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path(key: &str, objects: &[&str]) -> Vec<String> {
        key_to_path(key, |d| objects.contains(&d))
            .unwrap()
            .into_iter()
            .map(|n| String::from_utf8(n).unwrap())
            .collect()
    }

    #[test]
    fn awkward_keys_get_safe_names() {
        assert_eq!(path("a/b.txt", &[]), ["a", "b.txt"]);
        assert_eq!(path("dir/", &[]), ["dir", "%"]);
        assert_eq!(path("x//y", &[]), ["x", "%", "y"]);
        assert_eq!(path("/lead", &[]), ["%", "lead"]);
        assert_eq!(path("./z", &[]), ["%2E", "z"]);
        assert_eq!(path("../..", &[]), ["%2E%2E", "%2E%2E"]);
        assert_eq!(path("100%/a%2Eb", &[]), ["100%25", "a%252Eb"]);
        assert_eq!(path("a/b", &["a"]), ["a%", "b"]);
        assert_eq!(path("dir//x", &["dir/"]), ["dir", "%%", "x"]);
        assert_eq!(path("é ü/ñ", &[]), ["é ü", "ñ"]);
        assert_eq!(key_to_path("a\0b", |_| false), None);
        for bad in ["%2", "%41", "a%2", "%zz", "%2e", "x%25%2Ey", "%2E."] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn plain_pieces_keep_their_order() {
        let mut v = ["a", "a-b", "a.txt", "a%", "a%b", "ab", "a b", "%", "!"];
        v.sort();
        let enc: Vec<Vec<u8>> = v.iter().map(|p| encode(p.as_bytes()).unwrap()).collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]), "{enc:?}");
    }

    proptest! {
        #[test]
        fn any_key_round_trips(
            pieces in proptest::collection::vec("(|\\.|\\.\\.|%|%%|%2E|%25|[a-z%./ é\\-]{0,6})", 1..6),
            marks in proptest::collection::vec(any::<bool>(), 6),
        ) {
            let key = pieces.join("/");
            let p = key_to_path(&key, |d| marks[d.matches('/').count() % marks.len()]).unwrap();
            for n in &p {
                prop_assert!(holdfast_repo::tree::is_safe_name(n), "{n:?}");
            }
            prop_assert_eq!(path_to_key(&p).unwrap(), key);
        }

        #[test]
        fn encoding_keeps_the_order_of_ordinary_pieces(a in "[ -~é]{1,6}", b in "[ -~é]{1,6}") {
            prop_assume!(!a.contains('/') && !b.contains('/'));
            prop_assume!(![".", ".."].contains(&a.as_str()) && ![".", ".."].contains(&b.as_str()));
            let (ea, eb) = (encode(a.as_bytes()).unwrap(), encode(b.as_bytes()).unwrap());
            prop_assert_eq!(a.as_bytes().cmp(b.as_bytes()), ea.cmp(&eb));
            prop_assert_eq!(decode(&ea).unwrap(), a.as_bytes().to_vec());
        }
    }
}
