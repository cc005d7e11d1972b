//! Epoch-aligned window arithmetic in event time (UTC milliseconds).

use crate::Minute;
use recflow_schemas::MINUTE_MS;

/// The minute an event time falls in (negative times clamp to 0).
pub fn minute_of(ts_ms: i64) -> Minute {
    (ts_ms.max(0) / MINUTE_MS) as Minute
}

/// Start of the epoch-aligned window of length `size_ms` containing `ts_ms`.
pub fn window_start(ts_ms: i64, size_ms: i64) -> i64 {
    ts_ms.div_euclid(size_ms) * size_ms
}

/// Ends (exclusive) of every sliding window `[s, s+size)`, `s` a multiple of
/// `slide`, that contains `ts_ms`, ascending.
pub fn sliding_window_ends(ts_ms: i64, size_ms: i64, slide_ms: i64) -> impl Iterator<Item = i64> {
    let first_end = window_start(ts_ms, slide_ms) + slide_ms;
    let count = size_ms / slide_ms;
    (0..count).map(move |k| first_end + k * slide_ms)
}

/// The timely time by which all of a window ending at `end_ms` has arrived:
/// results for it are emitted at the window's last minute.
pub fn close_minute(end_ms: i64) -> Minute {
    minute_of(end_ms - 1)
}

/// The last timely time at which any job emits an output that depends on
/// an event: the close of the last window the event feeds. The commit
/// ledger waits for the sinks to pass it before the event's offset is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    pub hot_window_ms: i64,
    pub hot_slide_ms: i64,
    pub profile_window_ms: i64,
}

impl Release {
    /// The release time of an applied event at `ts_ms` (metrics close after its own minute).
    pub fn of(&self, ts_ms: i64) -> Minute {
        let hot = close_minute(window_start(ts_ms, self.hot_slide_ms) + self.hot_window_ms);
        let profile = close_minute(window_start(ts_ms, self.profile_window_ms) + self.profile_window_ms);
        hot.max(profile).max(minute_of(ts_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const Q: i64 = 900_000;

    #[test]
    fn release_is_the_last_window_close_an_event_feeds() {
        let r = Release { hot_window_ms: H, hot_slide_ms: Q, profile_window_ms: 300_000 };
        // 10:07: in hot windows ending 10:15 .. 11:00; the last closes at minute 10:59.
        assert_eq!(r.of(10 * H + 7 * 60_000), (10 * 60 + 59) as Minute);
        // Exactly 10:15 starts a window: its last is [10:15, 11:15), closing at 11:14.
        assert_eq!(r.of(10 * H + Q), (11 * 60 + 14) as Minute);
        // A profile window longer than the hot one decides.
        let long = Release { hot_window_ms: Q, hot_slide_ms: Q, profile_window_ms: H };
        assert_eq!(long.of(10 * H + 1), (10 * 60 + 59) as Minute);
    }

    #[test]
    fn event_on_a_boundary_belongs_to_the_window_it_starts() {
        // 10:15:00.000 exactly: in [10:15, 10:20) for 5-min tumbling, not [10:10, 10:15).
        let t = 10 * H + Q;
        assert_eq!(window_start(t, 300_000), t);
        assert_eq!(window_start(t - 1, 300_000), t - 300_000);
        // Sliding 1h/15m: windows ending 10:30, 10:45, 11:00, 11:15.
        let ends: Vec<i64> = sliding_window_ends(t, H, Q).collect();
        assert_eq!(ends, vec![10 * H + 2 * Q, 10 * H + 3 * Q, 11 * H, 11 * H + Q]);
        // One ms earlier: ends 10:15 .. 11:00.
        let ends: Vec<i64> = sliding_window_ends(t - 1, H, Q).collect();
        assert_eq!(ends, vec![10 * H + Q, 10 * H + 2 * Q, 10 * H + 3 * Q, 11 * H]);
        for e in sliding_window_ends(t, H, Q) {
            assert!(e - H <= t && t < e);
        }
    }

    #[test]
    fn minutes() {
        assert_eq!(minute_of(59_999), 0);
        assert_eq!(minute_of(60_000), 1);
        assert_eq!(close_minute(120_000), 1);
    }
}
