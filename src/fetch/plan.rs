//! Which range requests to send. Pure functions over byte ranges.

use std::ops::Range;

/// Most pieces one range is split into: a tiny chunk size on a huge object grows the chunk
/// instead of planning billions of requests.
pub(crate) const MAX_PIECES: u64 = 1 << 20;

/// The chunk size used for `len` bytes when `chunk` is asked for: at least 1, and large
/// enough that there are at most [`MAX_PIECES`] pieces.
pub(crate) fn chunk_size_for(len: u64, chunk: u64) -> u64 {
    chunk.max(1).max(len.div_ceil(MAX_PIECES))
}

/// `0..size` split into ranges of `chunk` bytes (the last may be shorter); none for size 0.
pub(crate) fn chunks(size: u64, chunk: u64) -> Vec<Range<u64>> {
    split(0..size, chunk)
}

/// `range` split into pieces of [`chunk_size_for`] bytes (the last may be shorter).
pub(crate) fn split(range: Range<u64>, chunk: u64) -> Vec<Range<u64>> {
    let chunk = chunk_size_for(range.end.saturating_sub(range.start), chunk);
    let mut out = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let end = range.end.min(start.saturating_add(chunk));
        out.push(start..end);
        start = end;
    }
    out
}

/// Sorted, merged spans covering every range in `ranges`: ranges that overlap or lie within
/// `gap` bytes of each other share one span (reading a small gap costs less than a request).
/// Empty ranges need no bytes and are left out.
pub(crate) fn coalesce(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    sorted.sort_by_key(|r| r.start);
    let mut spans: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match spans.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => last.end = last.end.max(r.end),
            _ => spans.push(r),
        }
    }
    spans
}

/// Which of a list of ranges hold which bytes: the destinations of a frame read at some offset,
/// found by binary search even when ranges overlap or come unsorted.
pub(crate) struct Destinations {
    /// The non-empty ranges and their indexes, by start.
    by_start: Vec<(Range<u64>, usize)>,
    /// `reach[k]`: the greatest end among `by_start[..=k]`, which only grows.
    reach: Vec<u64>,
}

impl Destinations {
    pub fn new(ranges: &[Range<u64>]) -> Self {
        let mut by_start: Vec<(Range<u64>, usize)> = (ranges.iter().cloned().zip(0..))
            .filter(|(r, _)| !r.is_empty())
            .collect();
        by_start.sort_by_key(|(r, _)| r.start);
        let reach = by_start
            .iter()
            .scan(0, |end, (r, _)| {
                *end = r.end.max(*end);
                Some(*end)
            })
            .collect();
        Self { by_start, reach }
    }

    /// The indexes of the ranges that share a byte with `bytes`.
    pub fn of(&self, bytes: Range<u64>) -> impl Iterator<Item = usize> + '_ {
        // Ranges before `first` all end at or before `bytes` starts.
        let first = self.reach.partition_point(|&end| end <= bytes.start);
        self.by_start[first..]
            .iter()
            .take_while(move |(r, _)| r.start < bytes.end)
            .filter(move |(r, _)| r.end > bytes.start)
            .map(|&(_, index)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // a one-chunk plan is what is being checked
    fn chunks_cover_the_object_exactly() {
        assert_eq!(chunks(0, 8), Vec::<Range<u64>>::new());
        assert_eq!(chunks(1, 8), [0..1]);
        assert_eq!(chunks(8, 8), [0..8]);
        assert_eq!(chunks(9, 8), [0..8, 8..9]);
        assert_eq!(chunks(7, 8), [0..7]);
        assert_eq!(split(5..21, 8), [5..13, 13..21]);
        assert_eq!(
            chunks(3, 0),
            [0..1, 1..2, 2..3],
            "a zero chunk size cannot loop forever"
        );
    }

    #[test]
    fn a_tiny_chunk_on_a_huge_object_plans_a_bounded_number_of_pieces() {
        let size = 1 << 40;
        assert_eq!(chunk_size_for(size, 1), size / MAX_PIECES);
        assert_eq!(chunks(size, 1).len() as u64, MAX_PIECES);
        assert_eq!(
            chunk_size_for(100, 8),
            8,
            "ordinary sizes keep the chunk asked for"
        );
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // everything merged into one span is the point
    fn coalesce_merges_overlapping_and_near_ranges() {
        let ranges = [100..200, 0..10, 15..20, 150..160, 1000..1001, 5..5];
        assert_eq!(coalesce(&ranges, 5), [0..20, 100..200, 1000..1001]);
        assert_eq!(coalesce(&ranges, 0), [0..10, 15..20, 100..200, 1000..1001]);
        assert_eq!(coalesce(&ranges, 1000), [0..1001]);
    }

    #[test]
    fn coalesce_keeps_every_byte_asked_for() {
        let ranges = [3..9, 40..41, 9..12, 20..30, 25..26];
        let spans = coalesce(&ranges, 2);
        for r in &ranges {
            assert!(
                spans.iter().any(|s| s.start <= r.start && r.end <= s.end),
                "{r:?} not in {spans:?}"
            );
        }
    }

    #[test]
    fn destinations_are_every_range_sharing_a_byte() {
        let ranges = [40..50, 0..10, 5..45, 10..10, 12..20, 60..70];
        let at = Destinations::new(&ranges);
        let of = |bytes: Range<u64>| {
            let mut found: Vec<usize> = at.of(bytes).collect();
            found.sort_unstable();
            found
        };
        assert_eq!(of(0..5), [1]);
        assert_eq!(of(9..13), [1, 2, 4]);
        assert_eq!(of(20..40), [2]);
        assert_eq!(of(44..46), [0, 2]);
        assert_eq!(of(50..60), Vec::<usize>::new());
        assert_eq!(of(69..100), [5]);
        for b in 0..80u64 {
            let want: Vec<usize> = (0..ranges.len())
                .filter(|&i| ranges[i].start <= b && b < ranges[i].end)
                .collect();
            assert_eq!(of(b..b + 1), want, "byte {b}");
        }
    }
}
