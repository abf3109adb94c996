//! Snapshot paths in URLs: raw bytes, percent-encoded, so names that are not UTF-8 (or hold
//! `&`, `#`, `?`, newlines) survive the round trip through a link. Query strings are parsed
//! here to bytes rather than with a UTF-8 form decoder, which would replace such bytes.

use percent_encoding::{percent_decode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes left as they are in a query value: letters, digits and `-._~/`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// `bytes` as a query value (every byte outside `A-Za-z0-9-._~/` as `%XX`).
pub fn encode(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, QUERY_VALUE).to_string()
}

/// The query string `q` (without `?`) as name/value pairs of raw bytes: `+` is a space,
/// `%XX` a byte; malformed escapes stay as they are.
pub fn parse_query(q: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// One `application/x-www-form-urlencoded` component as bytes.
pub fn decode(s: &str) -> Vec<u8> {
    let plus: Vec<u8> = s
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&plus).collect()
}

/// A parsed query or form body, looked up by name.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(Vec<u8>, Vec<u8>)>);

impl Params {
    /// Parses a query string or a form body.
    pub fn parse(q: &str) -> Params {
        Params(parse_query(q))
    }

    /// The first value of `name`, as bytes.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as text (`None` if absent or not UTF-8).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.bytes(name).and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The snapshot path `p`, normalised: absolute, no empty components, no trailing `/`;
    /// empty for the root. `.` and `..` never name entries (trees refuse them), so they are
    /// passed on and simply not found.
    pub fn snapshot_path(&self) -> Vec<u8> {
        normalize(self.bytes("p").unwrap_or(b""))
    }
}

/// An absolute snapshot path without empty components or a trailing `/` (empty: the root).
pub fn normalize(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len() + 1);
    for c in p.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    out
}

/// The components of a normalised path.
pub fn components(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// Bytes as text for display (invalid UTF-8 shown as U+FFFD; escaping is the template's).
pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_bytes_round_trip_through_a_query() {
        for name in [
            &b"/a/\xff\xfe odd&name=?#%+.txt"[..],
            b"/line\nbreak",
            b"/<script>alert(1)</script>",
            b"/plain/path-1.2_~x",
        ] {
            let q = format!("x=1&p={}&page=2", encode(name));
            assert!(q.is_ascii());
            let p = Params::parse(&q);
            assert_eq!(p.bytes("p"), Some(name), "{q}");
            assert_eq!(p.text("page"), Some("2"));
        }
        assert_eq!(encode(b"/a b/c"), "/a%20b/c");
        assert_eq!(decode("a+b%2Bc"), b"a b+c");
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalize(b""), b"");
        assert_eq!(normalize(b"/"), b"");
        assert_eq!(normalize(b"a//b/"), b"/a/b");
        assert_eq!(
            components(b"/a/b").collect::<Vec<_>>(),
            vec![&b"a"[..], b"b"]
        );
    }
}
