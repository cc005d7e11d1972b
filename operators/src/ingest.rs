//! The ingest operator: pulls validated records from a [`Source`], decides
//! lateness against the watermark, resolves categories from the catalog and
//! splits each event into the compact records the jobs need. Event time
//! becomes timely time (the event's minute); the operator's capabilities sit
//! at the watermark's minute, so downstream frontiers are the watermark.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, StreamVec};

use recflow_schemas::{DeadLetter, Event, KafkaPos, Output, RawEvent, Reason, Str, MINUTE_MS, UNKNOWN_CATEGORY};
use recflow_sources::{Catalog, Origin, Poll, Source};

use crate::hot_items::HotRec;
use crate::metrics::MetRec;
use crate::profile::ProfRec;
use crate::time::{minute_of, Release};
use crate::{Counters, Minute};

/// Ingest knobs.
#[derive(Clone)]
pub struct IngestConfig {
    /// Watermark lag behind the max event time seen (ms).
    pub allowed_lateness_ms: i64,
    /// Item catalog for events without a category.
    pub catalog: Arc<Catalog>,
    /// Shared counters.
    pub counters: Arc<Counters>,
    /// Batches handled per activation before yielding to other operators.
    pub batches_per_step: usize,
    /// How long to wait before polling again when the source had nothing
    /// (zero for files, a few ms for Kafka so an idle pipeline does not spin).
    pub idle_poll: Duration,
    /// When each applied event's outputs are all emitted (commit ledger).
    pub release: Release,
    /// Set on SIGTERM/SIGINT: stop reading, keep windows open, commit what the sinks acknowledged.
    pub shutdown: Arc<AtomicBool>,
    /// The source is not polled while `counters.in_flight` is at least this (0 = no bound).
    pub max_in_flight: usize,
}

/// The streams ingest produces.
pub struct IngestStreams<'s> {
    /// Raw-log rows (every valid event) and dead letters (invalid and late).
    pub log: StreamVec<'s, Minute, Output>,
    /// Applied events for the hot-items job.
    pub hot: StreamVec<'s, Minute, HotRec>,
    /// Applied events for the profile job.
    pub profile: StreamVec<'s, Minute, ProfRec>,
    /// Applied events for the metrics job.
    pub metrics: StreamVec<'s, Minute, MetRec>,
}

/// How soon a throttled ingest looks at `in_flight` again.
const THROTTLED_POLL: Duration = Duration::from_millis(1);

/// Per-minute output buffers of one step.
struct Buffers {
    log: Vec<Output>,
    hot: Vec<HotRec>,
    profile: Vec<ProfRec>,
    metrics: Vec<MetRec>,
}

impl Buffers {
    /// Buffers with room for `n` records each.
    fn with_capacity(n: usize) -> Self {
        Buffers {
            log: Vec::with_capacity(n),
            hot: Vec::with_capacity(n),
            profile: Vec::with_capacity(n),
            metrics: Vec::with_capacity(n),
        }
    }
}

/// The buffers of `minute`, created with room for a whole batch while
/// `budget` (records) lasts. A time-ordered batch's records share one or two
/// minutes (the events' and the watermark's), and growing those buffers by
/// doubling copied every record ~2x more; an unordered batch spread over many
/// minutes must not reserve a batch's room for each of them, hence the budget.
fn buffers_of<'b>(
    by_minute: &'b mut BTreeMap<Minute, Buffers>,
    minute: Minute,
    budget: &mut usize,
    room: usize,
) -> &'b mut Buffers {
    by_minute.entry(minute).or_insert_with(|| {
        let n = room.min(*budget);
        *budget -= n;
        Buffers::with_capacity(n)
    })
}

fn dead_letter(
    reason: Reason,
    field: Option<&str>,
    detail: String,
    origin: &Origin,
    offset: u64,
    payload: String,
) -> Output {
    Output::Dead(Box::new(DeadLetter {
        reason: reason.code().to_string(),
        field: field.map(str::to_string),
        detail,
        source: origin.pos(offset),
        payload,
    }))
}

/// Builds the ingest operator for this worker over `source`. `sunk` is the
/// frontier of what every sink acknowledged: offsets it covers are committed.
/// Raw-log rows and dead letters go out at the batch's time (the watermark),
/// so each partition's rows reach the sinks in offset order.
pub fn ingest<'s>(
    scope: Scope<'s, Minute>,
    mut source: Box<dyn Source>,
    cfg: IngestConfig,
    sunk: ProbeHandle<Minute>,
) -> IngestStreams<'s> {
    let worker = scope.index();
    let mut builder = OperatorBuilder::new("Ingest".to_owned(), scope);
    let info = builder.operator_info();
    let activator = scope.activator_for(info.address);
    let (log_out, log) = builder.new_output::<Vec<Output>>();
    let (hot_out, hot) = builder.new_output::<Vec<HotRec>>();
    let (prof_out, profile) = builder.new_output::<Vec<ProfRec>>();
    let (met_out, metrics) = builder.new_output::<Vec<MetRec>>();
    let (mut log_out, mut hot_out, mut prof_out, mut met_out) = (log_out, hot_out, prof_out, met_out);

    builder.build(move |caps| {
        let mut caps: Vec<Capability<Minute>> = caps;
        let mut by_minute: BTreeMap<Minute, Buffers> = BTreeMap::new();
        let unknown = Str::new_inline(UNKNOWN_CATEGORY);
        let mut tenants: Vec<(Str, u64)> = Vec::new();
        let mut acked: Option<Option<Minute>> = None;
        move |_frontiers| {
            if caps.is_empty() {
                return;
            }
            let frontier = sunk.with_frontier(|f| f.first().copied());
            if cfg.shutdown.load(Acquire) {
                // Graceful stop: no more input, windows stay open (a restart replays
                // them); commit everything the sinks acknowledged as soon as it is.
                if acked != Some(frontier) {
                    acked = Some(frontier);
                    source.sunk_before(frontier, true);
                }
                activator.activate_after(Duration::from_millis(10));
                return;
            }
            source.sunk_before(frontier, false);
            let mut finished = false;
            let mut progressed = false;
            // Backpressure: sinks slower than the source hold the reading back,
            // so memory and the work a stop leaves stay bounded.
            let throttled = cfg.max_in_flight > 0 && cfg.counters.in_flight.load(Relaxed) >= cfg.max_in_flight;
            let batches = if throttled { 0 } else { cfg.batches_per_step.max(1) };
            for _ in 0..batches {
                let batch = match source.poll() {
                    Poll::Ready(b) => {
                        progressed = true;
                        b
                    }
                    Poll::Pending => break,
                    Poll::Done => {
                        finished = true;
                        break;
                    }
                };
                let now_min = *caps[0].time();
                // Minute 0 is the initial capability, not a watermark (negative times clamp to it).
                let cap_start = if now_min == 0 { i64::MIN } else { now_min as i64 * MINUTE_MS };
                let mut running = batch.prior_max_ts;
                let mut release = now_min;
                let topic = match &batch.origin {
                    Origin::Kafka { topic, partition } => Some((Str::new(topic), *partition)),
                    Origin::File { .. } => None,
                };
                let room = batch.records.len();
                let mut budget = 2 * room;
                // Added once per batch: the counter is shared by the process's workers.
                let mut valid = 0;
                for rec in batch.records {
                    let mut ev: Event = match rec.parsed {
                        Ok(ev) => ev,
                        Err(rej) => {
                            cfg.counters.reject(rej.rejection.reason);
                            let r = rej.rejection;
                            buffers_of(&mut by_minute, now_min, &mut budget, room).log.push(dead_letter(
                                r.reason,
                                r.field,
                                r.detail,
                                &batch.origin,
                                rec.offset,
                                rej.payload,
                            ));
                            continue;
                        }
                    };
                    valid += 1;
                    let source = topic.as_ref().map(|(topic, partition)| KafkaPos {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: rec.offset as i64,
                    });
                    match tenants.iter_mut().find(|(t, _)| *t == ev.tenant_id) {
                        Some(e) => e.1 += 1,
                        None => tenants.push((ev.tenant_id.clone(), 1)),
                    }
                    if ev.category.is_none() {
                        ev.category = Some(
                            cfg.catalog
                                .category(&ev.tenant_id, &ev.item_id)
                                .cloned()
                                .unwrap_or_else(|| unknown.clone()),
                        );
                    }
                    // Late: below the partition's watermark, or in a minute this worker's
                    // watermark already passed (a partition that was idle or just moved here
                    // from another worker): such an event can no longer join its window.
                    let watermark = running.saturating_sub(cfg.allowed_lateness_ms).max(cap_start);
                    if ev.ts < watermark {
                        cfg.counters.late.fetch_add(1, Relaxed);
                        cfg.counters.reject(Reason::Late);
                        let detail = format!("timestamp {} is below the watermark {watermark}", ev.ts);
                        let payload = serde_json::to_string(&ev).unwrap_or_default();
                        let buf = buffers_of(&mut by_minute, now_min, &mut budget, room);
                        buf.log.push(dead_letter(
                            Reason::Late,
                            Some("timestamp"),
                            detail,
                            &batch.origin,
                            rec.offset,
                            payload,
                        ));
                        buf.log.push(Output::Raw(Box::new(RawEvent { event: ev, source })));
                        continue;
                    }
                    running = running.max(ev.ts);
                    release = release.max(cfg.release.of(ev.ts));
                    let buf = buffers_of(&mut by_minute, minute_of(ev.ts), &mut budget, room);
                    buf.hot.push(HotRec::from(&ev));
                    buf.profile.push(ProfRec::from(&ev));
                    buf.metrics.push(MetRec::from(&ev));
                    buffers_of(&mut by_minute, now_min, &mut budget, room)
                        .log
                        .push(Output::Raw(Box::new(RawEvent { event: ev, source })));
                }
                cfg.counters.events.fetch_add(valid, Relaxed);
                source.processed(release);
            }
            {
                let (mut l, mut h, mut p, mut m) =
                    (log_out.activate(), hot_out.activate(), prof_out.activate(), met_out.activate());
                for (minute, mut b) in std::mem::take(&mut by_minute) {
                    if !b.log.is_empty() {
                        cfg.counters.in_flight.fetch_add(b.log.len(), Relaxed);
                        l.give(&caps[0].delayed(&minute), &mut b.log);
                    }
                    if !b.hot.is_empty() {
                        h.give(&caps[1].delayed(&minute), &mut b.hot);
                    }
                    if !b.profile.is_empty() {
                        p.give(&caps[2].delayed(&minute), &mut b.profile);
                    }
                    if !b.metrics.is_empty() {
                        m.give(&caps[3].delayed(&minute), &mut b.metrics);
                    }
                }
            }
            cfg.counters.add_tenant_events(&mut tenants);
            let floor = source.max_ts_floor();
            let watermark = floor.saturating_sub(cfg.allowed_lateness_ms);
            cfg.counters.watermarks[worker % cfg.counters.watermarks.len()].store(watermark, Relaxed);
            if finished {
                caps.clear();
                return;
            }
            let t = minute_of(watermark);
            if floor != i64::MIN && t > *caps[0].time() {
                for c in caps.iter_mut() {
                    c.downgrade(&t);
                }
            }
            if throttled {
                activator.activate_after(THROTTLED_POLL);
            } else if progressed || cfg.idle_poll.is_zero() {
                activator.activate();
            } else {
                activator.activate_after(cfg.idle_poll);
            }
        }
    });
    IngestStreams { log, hot, profile, metrics }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use timely::dataflow::operators::Inspect;

    use recflow_schemas::{Action, Validator};
    use recflow_sources::{Batch, Record, Rejected};

    use super::*;

    /// Hands out fixed batches, one per poll; the floor after each is given.
    struct VecSource(Vec<(Batch, i64)>, i64);

    impl VecSource {
        fn new(batches: Vec<Batch>) -> Self {
            VecSource(batches.into_iter().map(|b| (b, i64::MIN)).collect(), i64::MIN)
        }
    }

    impl Source for VecSource {
        fn poll(&mut self) -> Poll {
            if self.0.is_empty() {
                Poll::Done
            } else {
                let (b, floor) = self.0.remove(0);
                self.1 = floor;
                Poll::Ready(b)
            }
        }
        fn max_ts_floor(&self) -> i64 {
            self.1
        }
    }

    fn cfg(counters: Arc<Counters>) -> IngestConfig {
        IngestConfig {
            allowed_lateness_ms: 300_000,
            catalog: Arc::new(Catalog::default()),
            counters,
            batches_per_step: 1,
            idle_poll: Duration::ZERO,
            release: Release { hot_window_ms: 3_600_000, hot_slide_ms: 900_000, profile_window_ms: 300_000 },
            shutdown: Arc::new(AtomicBool::new(false)),
            max_in_flight: 0,
        }
    }

    #[test]
    fn an_event_in_a_minute_the_workers_watermark_passed_is_late() {
        let kafka = |partition| Origin::Kafka { topic: "user-behaviors-t".into(), partition };
        let rec = |offset, parsed| Record { offset, parsed };
        // Partition 0 reaches 30 min; partition 1 (idle until now, or just moved
        // here) then brings 20 and 24 with no prior of its own: the worker's
        // watermark is already 25 min, so 20 cannot join its window; 24 can't either
        // (minute 24 < 25); 26 can.
        let batches = vec![
            (
                Batch { origin: kafka(0), records: vec![rec(0, Ok(event(30, "a")))], prior_max_ts: i64::MIN },
                30 * 60_000,
            ),
            (
                Batch {
                    origin: kafka(1),
                    records: vec![
                        rec(0, Ok(event(20, "old"))),
                        rec(1, Ok(event(24, "edge"))),
                        rec(2, Ok(event(26, "ok"))),
                    ],
                    prior_max_ts: i64::MIN,
                },
                30 * 60_000,
            ),
        ];
        let counters = Arc::new(Counters::new(1));
        let applied = Arc::new(Mutex::new(Vec::new()));
        let (a, c) = (applied.clone(), counters.clone());
        let batches = Mutex::new(Some(batches));
        timely::execute_directly(move |worker| {
            worker.dataflow::<Minute, _, _>(|scope| {
                let src = VecSource(batches.lock().unwrap().take().unwrap_or_default(), i64::MIN);
                let s = ingest(scope, Box::new(src), cfg(c), ProbeHandle::new());
                s.hot.inspect_core(move |ev| {
                    if let Ok((stamp, rs)) = ev {
                        let t = *stamp.into_iter().next().expect("a singleton stamp");
                        a.lock().unwrap().extend(rs.iter().map(|r: &HotRec| (r.event_id.to_string(), t)));
                    }
                });
            });
        });
        let mut applied = applied.lock().unwrap().clone();
        applied.sort();
        assert_eq!(applied, vec![("a".to_string(), 30), ("ok".to_string(), 26)], "each applied at its own minute");
        assert_eq!(counters.late.load(Relaxed), 2);
    }

    fn event(ts_min: i64, id: &str) -> Event {
        let line = format!(
            r#"{{"event_id":"{id}","tenant_id":"t","scenario_id":"s","user_id":"u","item_id":"i","action_type":"click","timestamp":{}}}"#,
            ts_min * 60_000
        );
        Validator::default().validate(line.as_bytes(), None, i64::MAX / 2).unwrap()
    }

    #[test]
    fn late_events_are_diverted_counted_and_still_logged() {
        let rec = |offset, parsed| Record { offset, parsed };
        let bad = recflow_schemas::Validator::default().validate(b"{", None, 0).unwrap_err();
        let batch = Batch {
            origin: Origin::File { path: "mem".into() },
            records: vec![
                rec(1, Ok(event(10, "a"))),
                rec(2, Ok(event(20, "b"))),
                // Watermark is now 20 - 5 = 15 min: 14 is late, exactly 15 is not.
                rec(3, Ok(event(14, "late"))),
                rec(4, Ok(event(15, "edge"))),
                rec(5, Err(Box::new(Rejected::new(bad, b"{")))),
            ],
            prior_max_ts: i64::MIN,
        };
        let counters = Arc::new(Counters::new(1));
        let log = Arc::new(Mutex::new(Vec::new()));
        let applied = Arc::new(Mutex::new(Vec::new()));
        let (l, a, c) = (log.clone(), applied.clone(), counters.clone());
        let batch = Mutex::new(Some(batch));
        timely::execute_directly(move |worker| {
            worker.dataflow::<Minute, _, _>(|scope| {
                let s = ingest(
                    scope,
                    Box::new(VecSource::new(batch.lock().unwrap().take().into_iter().collect())),
                    cfg(c),
                    ProbeHandle::new(),
                );
                s.log.inspect(move |o: &Output| l.lock().unwrap().push(o.clone()));
                s.hot.inspect(move |r: &HotRec| a.lock().unwrap().push((r.event_id.to_string(), r.action)));
            });
        });
        let applied = applied.lock().unwrap();
        let ids: Vec<&str> = applied.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids.len(), 3);
        assert!(!ids.contains(&"late") && ids.contains(&"edge"));
        assert!(applied.iter().all(|(_, a)| *a == Action::Click));
        let log = log.lock().unwrap();
        let raw = log.iter().filter(|o| matches!(o, Output::Raw(_))).count();
        assert_eq!(raw, 4, "late events still reach the raw log");
        let dead: Vec<(&str, &recflow_schemas::SourcePos)> = log
            .iter()
            .filter_map(|o| match o {
                Output::Dead(d) => Some((d.reason.as_str(), &d.source)),
                _ => None,
            })
            .collect();
        assert_eq!(dead.len(), 2);
        assert!(dead.contains(&("late", &recflow_schemas::SourcePos::File { path: "mem".into(), line: 3 })));
        assert!(dead.iter().any(|(r, _)| *r == "bad_json"));
        assert_eq!(counters.late.load(Relaxed), 1);
        assert_eq!(counters.rejected(Reason::BadJson), 1);
        assert_eq!(counters.events.load(Relaxed), 4);
    }

    #[test]
    fn the_source_waits_while_the_sinks_have_max_in_flight_rows_to_take() {
        // Ten batches of ten events, a bound of 25 rows and nobody taking them:
        // batches go in until the count reaches the bound (10, 20, 30), then stop.
        let batches: Vec<Batch> = (0..10)
            .map(|b| Batch {
                origin: Origin::File { path: "mem".into() },
                records: (0..10)
                    .map(|i| Record { offset: b * 10 + i, parsed: Ok(event(10, &format!("e{b}_{i}"))) })
                    .collect(),
                prior_max_ts: i64::MIN,
            })
            .collect();
        let counters = Arc::new(Counters::new(1));
        let c = counters.clone();
        let batches = Mutex::new(Some(batches));
        timely::execute_directly(move |worker| {
            worker.dataflow::<Minute, _, _>(|scope| {
                let src = VecSource::new(batches.lock().unwrap().take().unwrap_or_default());
                let cfg = IngestConfig { max_in_flight: 25, ..cfg(c.clone()) };
                ingest(scope, Box::new(src), cfg, ProbeHandle::new());
            });
            let steps = |worker: &mut timely::worker::Worker| {
                for _ in 0..50 {
                    worker.step();
                    std::thread::sleep(Duration::from_millis(1));
                }
            };
            steps(worker);
            assert_eq!(counters.in_flight.load(Relaxed), 30, "three batches in, then the source waits");
            // The sinks took 25 of them: 5 left, below the bound, so reading resumes (15, 25).
            counters.in_flight.fetch_sub(25, Relaxed);
            steps(worker);
            assert_eq!(counters.in_flight.load(Relaxed), 25);
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
        });
    }
}
