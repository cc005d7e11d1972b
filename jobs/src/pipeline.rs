//! The dataflow: sources -> ingest -> the four jobs -> sinks, one instance
//! per timely worker, records exchanged between workers by key.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::{Concatenate, OkErr};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Probe};
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use recflow_operators::hot_items::{HotMerge, HotOut, HotPanes, HotRec};
use recflow_operators::metrics::{MetPartial, MetricsMerge, MetricsPreAgg};
use recflow_operators::profile::{ProfRec, ProfileStore, ProfileWindows};
use recflow_operators::route::key_hash;
use recflow_operators::windowed::windowed;
use recflow_operators::{ingest, Counters, IngestConfig, Minute};
use recflow_schemas::{HotList, Output};
use recflow_sinks::Sink;
use recflow_sources::Source;

use crate::config::Config;
use crate::telemetry::SinkMetrics;

/// Builds this worker's dataflow: all four jobs fed by `source`, results
/// into `sinks`. The sinks' acknowledgements flow back to the source (a probe
/// on the sink operator's output) so it commits only offsets whose outputs
/// every sink of every worker acknowledged.
pub fn build<'s>(
    scope: Scope<'s, Minute>,
    cfg: &Config,
    source: Box<dyn Source>,
    ingest_cfg: IngestConfig,
    sinks: Vec<Box<dyn Sink>>,
    profile_store: Option<Box<dyn ProfileStore>>,
    ctx: SinkContext,
) {
    let counters: Arc<Counters> = ingest_cfg.counters.clone();
    let sunk = ProbeHandle::new();
    let streams = ingest(scope, source, ingest_cfg, sunk.clone());

    // Job 2: hot items (panes keyed by item, top-K merged per tenant/scenario).
    let by_item = Exchange::new(|r: &HotRec| key_hash(&[&r.tenant_id, &r.scenario_id, &r.item_id]));
    let stage1 = windowed(streams.hot, by_item, "HotPanes", HotPanes::new(cfg.hot()));
    #[allow(clippy::result_large_err)] // a routing split, not an error path
    let (partials, stats) = stage1.ok_err(|o| match o {
        HotOut::Partial(l) => Ok(l),
        HotOut::Stats(s) => Err(s),
    });
    let by_scenario = Exchange::new(|l: &HotList| key_hash(&[&l.tenant_id, &l.scenario_id]));
    let hot = windowed(partials, by_scenario, "HotTopK", HotMerge::new(cfg.hot(), counters.clone()));

    // Job 3: user profiles keyed by (tenant, user, scenario).
    let by_user = Exchange::new(|r: &ProfRec| key_hash(&[&r.tenant_id, &r.user_id, &r.scenario_id]));
    let mut profile_logic = ProfileWindows::new(cfg.profile(), counters.clone());
    if let Some(store) = profile_store {
        profile_logic = profile_logic.with_store(store);
    }
    let profiles = windowed(streams.profile, by_user, "Profiles", profile_logic);

    // Job 4: metrics, pre-aggregated locally, merged per (tenant, scenario).
    let pre = windowed(streams.metrics, Pipeline, "MetricsPreAgg", MetricsPreAgg::default());
    let by_tenant_scenario = Exchange::new(|p: &MetPartial| key_hash(&[&p.key.tenant_id, &p.key.scenario_id]));
    let metrics = windowed(pre, by_tenant_scenario, "Metrics", MetricsMerge::new(counters.clone()));

    // Job 1 (raw log) and the dead letters travel in `streams.log`.
    let outputs = scope.concatenate([
        streams.log,
        hot.map(Output::Hot),
        stats.map(Output::ItemStats),
        profiles.map(Output::Profile),
        metrics.map(Output::Metrics),
    ]);
    sink_all(outputs, sinks, ctx, counters).probe_with(&sunk);
}

/// What the sink operator shares with the rest of the process.
#[derive(Clone)]
pub struct SinkContext {
    /// Sink failures, reported once per sink; the run fails at the end if any.
    pub errors: Arc<Mutex<Vec<String>>>,
    /// Prometheus series for sink calls (none in tests).
    pub metrics: Option<SinkMetrics>,
    /// How often idle sinks get a `write(&[])` tick (age-based batch flushes).
    pub tick: Duration,
    /// How often every sink is flushed so the offsets of acknowledged outputs can be committed.
    pub checkpoint: Duration,
    /// Set on SIGTERM/SIGINT: flush now, then the worker leaves.
    pub shutdown: Arc<AtomicBool>,
    /// How long after `shutdown` the sinks may keep writing what is in flight.
    pub stop_timeout: Duration,
    /// Set by the sink operator once it flushed after `shutdown`.
    pub flushed: Arc<AtomicBool>,
}

/// Hands every output batch to each sink, ticks idle sinks so age-based
/// batches go out, and flushes when the input is done. A failing sink is
/// reported once and skipped (service sinks retry inside `write` first).
///
/// Every `ctx.checkpoint` it flushes all sinks; once they acknowledged, it
/// moves the capability of its (empty) output to the input frontier seen
/// before the flush: the output's frontier is "everything before this time
/// is acknowledged by every sink", which the source's probe reads. A failed
/// sink never acknowledges again, so nothing after it is committed.
fn sink_all<'s>(
    stream: StreamVec<'s, Minute, Output>,
    mut sinks: Vec<Box<dyn Sink>>,
    ctx: SinkContext,
    counters: Arc<Counters>,
) -> StreamVec<'s, Minute, ()> {
    let scope = stream.scope();
    let mut builder = OperatorBuilder::new("Sinks".to_owned(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let mut input = builder.new_input(stream, Pipeline);
    let (_acks, acked) = builder.new_output::<Vec<()>>();
    let mut failed = vec![false; sinks.len()];
    let mut retries_seen: Vec<u64> = sinks.iter().map(|s| s.retries()).collect();
    if let Some(m) = &ctx.metrics {
        sinks.iter().for_each(|s| m.register(s.name()));
    }
    let mut flushed = false;
    let mut last_checkpoint = Instant::now();
    // Set at the first activation after `shutdown`; past `stop_timeout` the
    // rest of the input is dropped unwritten and never acknowledged, so the
    // stop ends in bounded time however far the sinks are behind the source
    // and the next start replays what was dropped.
    let mut stop_started: Option<Instant> = None;
    let mut dropped = 0usize;
    builder.build(move |caps| {
        let mut held: Option<Capability<Minute>> = caps.into_iter().next();
        move |frontiers| {
            let mut call = |i: usize, sinks: &mut Vec<Box<dyn Sink>>, failed: &mut [bool], batch: Option<&[Output]>| {
                if failed[i] {
                    return;
                }
                let s = &mut sinks[i];
                let started = Instant::now();
                let result = match batch {
                    Some(b) => s.write(b),
                    None => s.flush(),
                };
                if let Some(m) = &ctx.metrics {
                    m.observe(s.name(), started.elapsed(), result.is_ok());
                    let r = s.retries();
                    m.retries.with_label_values(&[s.name()]).inc_by(r.saturating_sub(retries_seen[i]));
                    retries_seen[i] = r;
                }
                if let Err(e) = result {
                    tracing::error!(sink = s.name(), error = %e, "sink failed");
                    failed[i] = true;
                    ctx.errors.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{}: {e}", s.name()));
                }
            };
            if ctx.shutdown.load(Acquire) {
                stop_started.get_or_insert_with(Instant::now);
            }
            let overdue = || stop_started.is_some_and(|t| t.elapsed() >= ctx.stop_timeout);
            let mut got = false;
            input.for_each(|_cap, data| {
                got = true;
                let logged = data.iter().filter(|o| matches!(o, Output::Raw(_) | Output::Dead(_))).count();
                if dropped > 0 || overdue() {
                    dropped += data.len();
                } else {
                    for i in 0..sinks.len() {
                        call(i, &mut sinks, &mut failed, Some(data));
                    }
                }
                counters.in_flight.fetch_sub(logged, Relaxed);
            });
            if dropped > 0 {
                // Nothing past the last acknowledgement may be acknowledged now.
                if !ctx.flushed.swap(true, Release) {
                    tracing::warn!(
                        outputs = dropped,
                        timeout_secs = ctx.stop_timeout.as_secs_f64(),
                        "stop timeout: outputs still in flight are left to the replay of the next start"
                    );
                }
                return;
            }
            let frontier = frontiers[0].frontier().first().copied();
            if frontier.is_none() {
                if !flushed {
                    flushed = true;
                    for i in 0..sinks.len() {
                        call(i, &mut sinks, &mut failed, None);
                    }
                    if !failed.iter().any(|f| *f) {
                        held = None;
                    }
                }
                return;
            }
            let stopping = stop_started.is_some();
            if last_checkpoint.elapsed() >= ctx.checkpoint || (stopping && !ctx.flushed.load(Acquire)) {
                // Everything before `frontier` was received above; flushed, it is acknowledged.
                last_checkpoint = Instant::now();
                for i in 0..sinks.len() {
                    call(i, &mut sinks, &mut failed, None);
                }
                if let (Some(h), Some(f), false) = (held.as_mut(), frontier, failed.iter().any(|f| *f)) {
                    if f > *h.time() {
                        h.downgrade(&f);
                    }
                }
                if stopping {
                    ctx.flushed.store(true, Release);
                }
            } else if !got {
                for i in 0..sinks.len() {
                    call(i, &mut sinks, &mut failed, Some(&[]));
                }
            }
            activator.activate_after(ctx.tick.min(ctx.checkpoint));
        }
    });
    acked
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;

    use timely::dataflow::InputHandle;

    use super::*;

    /// Counts the outputs it was given and its flushes; each write takes `delay`.
    struct Slow {
        written: Arc<AtomicUsize>,
        flushes: Arc<AtomicUsize>,
        delay: Duration,
    }

    impl Sink for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn write(&mut self, batch: &[Output]) -> Result<(), recflow_sinks::SinkError> {
            if !batch.is_empty() {
                std::thread::sleep(self.delay);
            }
            self.written.fetch_add(batch.len(), SeqCst);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), recflow_sinks::SinkError> {
            self.flushes.fetch_add(1, SeqCst);
            Ok(())
        }
    }

    /// A checkpoint at every activation, ticks every millisecond.
    fn test_ctx(stop_timeout: Duration) -> SinkContext {
        SinkContext {
            errors: Arc::default(),
            metrics: None,
            tick: Duration::from_millis(1),
            checkpoint: Duration::ZERO,
            shutdown: Arc::default(),
            stop_timeout,
            flushed: Arc::default(),
        }
    }

    fn dead(line: u64) -> Output {
        Output::Dead(Box::new(recflow_schemas::DeadLetter {
            reason: "bad_json".into(),
            field: None,
            detail: String::new(),
            source: recflow_schemas::SourcePos::File { path: "mem".into(), line },
            payload: "{".into(),
        }))
    }

    fn hot(window_end: i64) -> Output {
        let (tenant_id, scenario_id) = ("t".into(), "s".into());
        Output::Hot(HotList { tenant_id, scenario_id, category: None, window_end, entries: vec![] })
    }

    /// Outputs of minutes 0..3 acknowledged at checkpoints; on the stop, ten
    /// batches of minute 3 each take 20 ms against a 50 ms stop timeout.
    /// Returns (outputs written, acknowledged frontier after the stop).
    fn stop_with_slow_sink(stop_timeout: Duration) -> (usize, Option<Minute>) {
        let written = Arc::new(AtomicUsize::new(0));
        let ctx = test_ctx(stop_timeout);
        let (shutdown, flushed) = (ctx.shutdown.clone(), ctx.flushed.clone());
        let sink = Slow { written: written.clone(), flushes: Arc::default(), delay: Duration::from_millis(20) };
        let acked = timely::execute_directly(move |worker| {
            let mut input = InputHandle::new();
            let probe = ProbeHandle::new();
            worker.dataflow::<Minute, _, _>(|scope| {
                let stream = input.to_stream(scope).container::<Vec<Output>>();
                sink_all(stream, vec![Box::new(sink)], ctx, Arc::new(Counters::new(1))).probe_with(&probe);
            });
            for minute in 0..3 {
                input.send(hot(minute as i64));
                input.advance_to(minute + 1);
            }
            // Every activation is a checkpoint here: minutes 0..3 get acknowledged.
            while probe.less_than(&3) {
                worker.step();
            }
            for _ in 0..10 {
                input.send(hot(3));
                // One batch per send: the operator sees ten separate batches.
                input.flush();
            }
            input.advance_to(4);
            shutdown.store(true, SeqCst);
            while !flushed.load(SeqCst) {
                worker.step();
            }
            for _ in 0..20 {
                worker.step();
            }
            let acked = probe.with_frontier(|f| f.first().copied());
            // As a stopping worker does (commands/run.rs): leave, windows open.
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
            acked
        });
        (written.load(SeqCst), acked)
    }

    #[test]
    fn a_stop_within_its_timeout_writes_and_acknowledges_everything_in_flight() {
        let (written, acked) = stop_with_slow_sink(Duration::from_secs(60));
        assert_eq!(written, 13);
        assert_eq!(acked, Some(4), "the stop's flush acknowledges minute 3");
    }

    #[test]
    fn past_the_stop_timeout_the_rest_is_dropped_and_never_acknowledged() {
        let (written, acked) = stop_with_slow_sink(Duration::from_millis(50));
        // 3 before the stop, then writes of 20 ms each until 50 ms have passed.
        assert!((3 + 1..3 + 10).contains(&written), "written {written}: some, not all, of minute 3");
        assert_eq!(acked, Some(3), "nothing of minute 3 is acknowledged");
    }

    #[test]
    fn the_sink_operator_takes_the_log_rows_it_receives_off_the_in_flight_count() {
        let ctx = test_ctx(Duration::from_secs(60));
        let counters = Arc::new(Counters::new(1));
        let c = counters.clone();
        // As ingest counts them: three dead letters; window results are not counted.
        counters.in_flight.store(3, SeqCst);
        let sink = Slow { written: Arc::default(), flushes: Arc::default(), delay: Duration::ZERO };
        let left = timely::execute_directly(move |worker| {
            let mut input = InputHandle::new();
            let probe = ProbeHandle::new();
            worker.dataflow::<Minute, _, _>(|scope| {
                let stream = input.to_stream(scope).container::<Vec<Output>>();
                sink_all(stream, vec![Box::new(sink)], ctx, c).probe_with(&probe);
            });
            for o in [dead(1), hot(0), dead(2)] {
                input.send(o);
                input.flush();
            }
            input.advance_to(1);
            while probe.less_than(&1) {
                worker.step();
            }
            let after_two = counters.in_flight.load(SeqCst);
            input.send(dead(3));
            input.advance_to(2);
            while probe.less_than(&2) {
                worker.step();
            }
            (after_two, counters.in_flight.load(SeqCst))
        });
        assert_eq!(left, (1, 0));
    }
}
