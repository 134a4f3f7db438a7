//! Summary statistics of timing samples: median and 90th percentile.

use std::time::Duration;

/// Median and p90 of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    /// The median (mean of the two middle samples for an even count).
    pub median: Duration,
    /// The 90th percentile, nearest-rank.
    pub p90: Duration,
    /// The fastest sample.
    pub min: Duration,
    /// The slowest sample.
    pub max: Duration,
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none.
    pub(crate) fn of(samples: &[Duration]) -> Option<Self> {
        let mut s = samples.to_vec();
        s.sort();
        let n = s.len();
        let (first, last) = (*s.first()?, *s.last()?);
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2
        };
        // Nearest rank: the smallest sample with at least 90% of samples at or below it.
        let rank = (n * 9).div_ceil(10).max(1);
        Some(Self {
            median,
            p90: s[rank - 1],
            min: first,
            max: last,
        })
    }
}

/// Milliseconds with one decimal.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn median_and_p90() {
        let s = Summary::of(&ms_list(&[10, 1, 9, 2, 8, 3, 7, 4, 6, 5])).expect("samples");
        assert_eq!(s.median, Duration::from_micros(5500));
        assert_eq!(s.p90, Duration::from_millis(9));
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.max, Duration::from_millis(10));
        let one = Summary::of(&ms_list(&[7])).expect("one sample");
        assert_eq!(
            (one.median, one.p90),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
        let three = Summary::of(&ms_list(&[3, 1, 2])).expect("three samples");
        assert_eq!(
            (three.median, three.p90),
            (Duration::from_millis(2), Duration::from_millis(3))
        );
        assert!(Summary::of(&[]).is_none());
    }
}
