//! The progress line on stderr: events/s, watermark, windows closed, late, invalid.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use recflow_operators::Counters;

/// A background thread printing one line per interval until stopped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// Formats an epoch-ms watermark for humans.
pub fn fmt_watermark(ms: i64) -> String {
    if ms == i64::MIN {
        return "-".into();
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// One progress line.
pub fn line(c: &Counters, rate: f64) -> String {
    format!(
        "events={} events/s={:.0} watermark={} windows_closed={} late={} invalid={}",
        c.events.load(Relaxed),
        rate,
        fmt_watermark(c.watermark()),
        c.windows_closed(),
        c.late.load(Relaxed),
        c.invalid_total(),
    )
}

impl Progress {
    /// Starts reporting every `interval` (none if zero).
    pub fn start(counters: Arc<Counters>, interval: Duration) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if interval.is_zero() {
            return Progress { stop, handle: None };
        }
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut last = (Instant::now(), 0u64);
            let mut next = Instant::now() + interval;
            while !flag.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if Instant::now() < next {
                    continue;
                }
                next += interval;
                let n = counters.events.load(Relaxed);
                let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), n);
                eprintln!("progress {}", line(&counters, rate));
            }
        });
        Progress { stop, handle: Some(handle) }
    }

    /// Stops the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
