//! A file's content as an offset table: which pieces (blobs or zero runs) a byte range
//! covers, so a read at any offset touches only the blobs it needs.

use holdfast_repo::Id;

/// One piece of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// A data blob of this many plaintext bytes.
    Blob(Id, u64),
    /// A run of this many zero bytes.
    Zeros(u64),
}

impl Piece {
    /// The piece's length in bytes.
    pub fn len(&self) -> u64 {
        match *self {
            Piece::Blob(_, n) | Piece::Zeros(n) => n,
        }
    }

    /// Whether the piece holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The part of one piece a read covers: piece number and the byte range within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Index of the piece in the layout.
    pub piece: usize,
    /// First byte within the piece.
    pub from: u64,
    /// One past the last byte within the piece.
    pub to: u64,
}

/// A file's pieces with the offset each starts at.
#[derive(Debug, Clone, Default)]
pub struct FileLayout {
    pieces: Vec<Piece>,
    /// `starts[i]` is the file offset of piece `i`.
    starts: Vec<u64>,
    len: u64,
}

impl FileLayout {
    /// The layout of pieces in file order.
    pub fn new(pieces: Vec<Piece>) -> FileLayout {
        let mut starts = Vec::with_capacity(pieces.len());
        let mut at = 0u64;
        for p in &pieces {
            starts.push(at);
            at = at.saturating_add(p.len());
        }
        FileLayout {
            pieces,
            starts,
            len: at,
        }
    }

    /// The content length (sum of the pieces).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The piece at an index.
    pub fn piece(&self, i: usize) -> Piece {
        self.pieces[i]
    }

    /// The pieces covering `[offset, offset + size)`, clipped to the content, in order.
    pub fn spans(&self, offset: u64, size: u64) -> Vec<Span> {
        let end = offset.saturating_add(size).min(self.len);
        let mut out = Vec::new();
        if offset >= end {
            return out;
        }
        // The last piece starting at or before `offset` (empty pieces skipped below).
        let mut i = self.starts.partition_point(|&s| s <= offset) - 1;
        while i < self.pieces.len() && self.starts[i] < end {
            let start = self.starts[i];
            let plen = self.pieces[i].len();
            let from = offset.max(start) - start;
            let to = (end.min(start + plen)) - start;
            if to > from {
                out.push(Span { piece: i, from, to });
            }
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(lens: &[(bool, u64)]) -> FileLayout {
        FileLayout::new(
            lens.iter()
                .enumerate()
                .map(|(i, &(blob, n))| {
                    if blob {
                        Piece::Blob(Id([i as u8; 32]), n)
                    } else {
                        Piece::Zeros(n)
                    }
                })
                .collect(),
        )
    }

    #[test]
    fn examples() {
        let l = layout(&[(true, 10), (false, 5), (true, 0), (true, 7)]);
        assert_eq!(l.len(), 22);
        assert_eq!(
            l.spans(8, 9),
            vec![
                Span {
                    piece: 0,
                    from: 8,
                    to: 10
                },
                Span {
                    piece: 1,
                    from: 0,
                    to: 5
                },
                Span {
                    piece: 3,
                    from: 0,
                    to: 2
                },
            ]
        );
        assert_eq!(
            l.spans(21, 100),
            vec![Span {
                piece: 3,
                from: 6,
                to: 7
            }]
        );
        assert!(l.spans(22, 1).is_empty());
        assert!(l.spans(5, 0).is_empty());
        assert!(FileLayout::new(vec![]).spans(0, 10).is_empty());
    }

    proptest! {
        /// The spans of any range are exactly the bytes of that range clipped to the file,
        /// in order, each within its piece: checked against the file spelled out byte by
        /// byte as (piece, offset in piece).
        #[test]
        fn spans_cover_exactly_the_range(
            lens in proptest::collection::vec((any::<bool>(), 0u64..40), 0..12),
            offset in 0u64..500,
            size in 0u64..500,
        ) {
            let l = layout(&lens);
            let mut bytes = Vec::new();
            for (i, &(_, n)) in lens.iter().enumerate() {
                for b in 0..n {
                    bytes.push((i, b));
                }
            }
            prop_assert_eq!(l.len(), bytes.len() as u64);
            let want: Vec<(usize, u64)> = bytes
                .iter()
                .copied()
                .skip(offset as usize)
                .take(size as usize)
                .collect();
            let mut got = Vec::new();
            for s in l.spans(offset, size) {
                prop_assert!(s.from < s.to && s.to <= l.piece(s.piece).len());
                for b in s.from..s.to {
                    got.push((s.piece, b));
                }
            }
            prop_assert_eq!(got, want);
        }
    }
}
