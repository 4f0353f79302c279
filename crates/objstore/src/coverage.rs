//! Which byte ranges have been written: detects overlaps and gaps.

use std::collections::BTreeMap;

/// A set of disjoint half-open ranges, merged when they touch, so contiguous writes keep it at
/// one entry.
#[derive(Debug, Default, Clone)]
pub(crate) struct Coverage {
    /// start → end, disjoint and not touching.
    ranges: BTreeMap<u64, u64>,
}

impl Coverage {
    /// Adds `[start, end)`. On overlap with what is there, returns the overlapping range and
    /// changes nothing.
    pub(crate) fn insert(&mut self, start: u64, end: u64) -> Result<(), (u64, u64)> {
        if start >= end {
            return Ok(());
        }
        let prev = self
            .ranges
            .range(..=start)
            .next_back()
            .map(|(&s, &e)| (s, e));
        if let Some((s, e)) = prev {
            if e > start {
                return Err((s, e));
            }
        }
        let next = self.ranges.range(start..).next().map(|(&s, &e)| (s, e));
        if let Some((s, e)) = next {
            if s < end {
                return Err((s, e));
            }
        }
        let mut new_start = start;
        let mut new_end = end;
        if let Some((s, e)) = prev {
            if e == start {
                self.ranges.remove(&s);
                new_start = s;
            }
        }
        if let Some((s, e)) = next {
            if s == end {
                self.ranges.remove(&s);
                new_end = e;
            }
        }
        self.ranges.insert(new_start, new_end);
        Ok(())
    }

    /// The end of the furthest range (0 when empty).
    pub(crate) fn end(&self) -> u64 {
        self.ranges.values().next_back().copied().unwrap_or(0)
    }

    /// The first gap in `[0, end)`, if any.
    pub(crate) fn first_gap(&self, end: u64) -> Option<(u64, u64)> {
        let mut pos = 0;
        for (&s, &e) in &self.ranges {
            if s > pos {
                return Some((pos, s.min(end)));
            }
            pos = e;
            if pos >= end {
                return None;
            }
        }
        (pos < end).then_some((pos, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_detects_overlap_and_gaps() {
        let mut c = Coverage::default();
        assert_eq!(c.first_gap(0), None);
        c.insert(10, 20).unwrap();
        c.insert(30, 40).unwrap();
        assert_eq!(c.insert(15, 16), Err((10, 20)));
        assert_eq!(c.insert(19, 31), Err((10, 20)));
        assert_eq!(c.insert(25, 31), Err((30, 40)));
        assert_eq!(c.first_gap(40), Some((0, 10)));
        c.insert(0, 10).unwrap();
        assert_eq!(c.first_gap(40), Some((20, 30)));
        c.insert(20, 30).unwrap();
        assert_eq!(c.first_gap(40), None);
        assert_eq!(c.ranges.len(), 1);
        assert_eq!(c.end(), 40);
        assert_eq!(c.first_gap(50), Some((40, 50)));
        c.insert(5, 5).unwrap();
    }
}
