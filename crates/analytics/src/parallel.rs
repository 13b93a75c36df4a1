//! Splitting work across cores: contiguous ranges, a few per core so that uneven ranges
//! balance out. Kernels run each range on the rayon pool and merge partial results.

use std::ops::Range;

/// Ranges covering `0..len`: four per core, none smaller than 4,096 items (small inputs run
/// as one range).
pub fn ranges(len: usize) -> Vec<Range<usize>> {
    split(len, rayon::current_num_threads().max(1) * 4)
}

/// Ranges covering `0..len`, one per core: for kernels whose partial state is as large as
/// the number of persons.
pub fn per_core(len: usize) -> Vec<Range<usize>> {
    split(len, rayon::current_num_threads().max(1))
}

/// Like [`ranges`], over the given row spans only (what a table's statistics leave to scan).
pub fn ranges_over(spans: &[Range<usize>]) -> Vec<Range<usize>> {
    let pieces = rayon::current_num_threads().max(1) * 4;
    let total: usize = spans.iter().map(|s| s.len()).sum();
    spans
        .iter()
        .flat_map(|s| {
            // Each span gets pieces in proportion to its size (at least one).
            let share = (pieces * s.len()).div_ceil(total.max(1)).max(1);
            split(s.len(), share)
                .into_iter()
                .map(move |r| s.start + r.start..s.start + r.end)
        })
        .filter(|r| !r.is_empty())
        .collect()
}

fn split(len: usize, pieces: usize) -> Vec<Range<usize>> {
    let pieces = pieces.min(len.div_ceil(4_096)).max(1);
    let size = len.div_ceil(pieces).max(1);
    (0..pieces)
        .map(|i| (i * size).min(len)..((i + 1) * size).min(len))
        .filter(|r| !r.is_empty() || len == 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once() {
        for len in [0usize, 1, 4_095, 4_096, 100_000, 1_000_003] {
            let r = ranges(len);
            assert!(!r.is_empty());
            assert_eq!(r.first().map(|r| r.start), Some(0));
            assert_eq!(r.last().map(|r| r.end), Some(len));
            assert!(r.windows(2).all(|w| w[0].end == w[1].start), "{len}: {r:?}");
        }
    }

    #[test]
    fn ranges_over_cover_the_spans_once() {
        let spans = [0..10, 20..100_020, 200_000..200_001];
        let r = ranges_over(&spans);
        let covered: Vec<usize> = r.iter().flat_map(|r| r.clone()).collect();
        let want: Vec<usize> = spans.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(covered, want);
        assert!(ranges_over(&[]).is_empty());
    }
}
