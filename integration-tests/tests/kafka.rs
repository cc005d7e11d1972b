//! Kafka source, sink and tooling against the real broker (`KAFKA_BROKERS`).
//! Every test uses its own tenants, topics and consumer group.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use recflow_integration_tests::{service, unique};
use recflow_schemas::{
    ActionCounts, DeadLetter, HotList, MetricsRow, MetricsWindow, Output, ProfileDoc, Reason, SourcePos, Validator,
};
use recflow_sinks::kafka::ItemStatsUpdate;
use recflow_sinks::{KafkaSink, KafkaSinkConfig, Sink};
use recflow_sources::generator::{events, GenConfig};
use recflow_sources::kafka::topic_of_tenant;
use recflow_sources::kafka_admin::{create_topics, produce_jsonl};
use recflow_sources::{Batch, Coverage, Handoffs, KafkaConfig, KafkaSource, Origin, Poll, Source};

/// A tenant/topic prefix unique to this test: lowercase, valid in a tenant id.
fn base() -> String {
    unique("kt").to_lowercase()
}

/// `n` generated JSON lines (event time ending about now) spread over `tenants`.
fn gen_lines(tenants: &[&str], n: u64, seed: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let cfg = GenConfig {
        events: n,
        tenants: tenants.len() as u32,
        users: 200,
        items: 100,
        seed,
        start_ms: now - 3_600_000,
        ..GenConfig::default()
    };
    let mut out = String::new();
    let mut buf = Vec::new();
    let mut gen = events(&cfg);
    while {
        buf.clear();
        gen.next_into(&mut buf)
    } {
        let mut line = String::from_utf8(buf.clone()).unwrap();
        for (i, t) in tenants.iter().enumerate() {
            line = line.replace(&format!("\"tenant_{i:03}\""), &format!("\"{t}\""));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn source_cfg(brokers: &str, group: &str, pattern: String) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_string(),
        group_id: group.to_string(),
        topic_pattern: pattern,
        poll_batch: 100,
        metadata_refresh_ms: 1000,
        // The broker's minimum: groups form in ~3 s instead of ~5 s.
        session_timeout_ms: 6000,
        ..KafkaConfig::default()
    }
}

/// What one consumer saw: batches in the order handed out.
#[derive(Default)]
struct Seen {
    batches: Vec<Batch>,
}

impl Seen {
    fn event_ids(&self) -> Vec<String> {
        self.batches
            .iter()
            .flat_map(|b| &b.records)
            .filter_map(|r| r.parsed.as_ref().ok().map(|e| e.event_id.to_string()))
            .collect()
    }
    fn partitions(&self) -> BTreeSet<(String, i32)> {
        self.batches
            .iter()
            .map(|b| match &b.origin {
                Origin::Kafka { topic, partition } => (topic.to_string(), *partition),
                o => panic!("unexpected origin {o:?}"),
            })
            .collect()
    }
}

/// Polls until `stop` says so; returns what was seen.
fn drain(source: &mut KafkaSource, mut stop: impl FnMut(&Seen, Instant) -> bool) -> Seen {
    let mut seen = Seen::default();
    let mut last = Instant::now();
    loop {
        match source.poll() {
            Poll::Ready(b) => {
                last = Instant::now();
                seen.batches.push(b);
                // What the dataflow reports once a batch is turned into outputs (commit ledger).
                source.processed(0);
            }
            Poll::Pending => std::thread::sleep(Duration::from_millis(2)),
            Poll::Done => return seen,
        }
        if stop(&seen, last) {
            return seen;
        }
    }
}

/// Checks `prior_max_ts`: per partition, each batch's prior is the max valid ts of everything before it.
fn check_prior_max_ts(seen: &Seen) {
    let mut by_part: HashMap<(String, i32), Vec<&Batch>> = HashMap::new();
    for b in &seen.batches {
        let Origin::Kafka { topic, partition } = &b.origin else { panic!() };
        by_part.entry((topic.to_string(), *partition)).or_default().push(b);
    }
    for (part, batches) in by_part {
        let mut running = i64::MIN;
        let mut last_offset = None;
        for b in batches {
            assert_eq!(b.prior_max_ts, running, "prior_max_ts of a batch of {part:?}");
            for r in &b.records {
                assert!(last_offset.is_none_or(|o| r.offset > o), "offsets increase within {part:?}");
                last_offset = Some(r.offset);
                if let Ok(e) = &r.parsed {
                    running = running.max(e.ts);
                }
            }
        }
    }
}

/// (brokers, test prefix, tenant, its input topic with 3 partitions, created).
fn one_tenant_topic() -> (String, String, String, String) {
    let brokers = service("KAFKA_BROKERS");
    let b = base();
    let ta = format!("{b}_a");
    let topic = topic_of_tenant(&ta);
    create_topics(&brokers, &[&topic], 3).unwrap();
    (brokers, b, ta, topic)
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap()
}

#[test]
fn two_members_split_partitions_and_see_every_event_once() {
    let t0 = Instant::now();
    let brokers = service("KAFKA_BROKERS");
    let b = base();
    let (ta, tb, tx) = (format!("{b}_a"), format!("{b}_b"), format!("{b}_x"));
    let (topic_a, topic_b, topic_x) = (topic_of_tenant(&ta), topic_of_tenant(&tb), topic_of_tenant(&tx));
    create_topics(&brokers, &[&topic_a, &topic_b, &topic_x], 3).unwrap();
    let mut cfg = source_cfg(&brokers, &unique("g"), format!("^user-behaviors-{b}_[a-z]+$"));
    // Like the DLQ: matches the pattern but is never consumed.
    cfg.exclude_topics = vec![topic_x.clone()];

    // Both members join before any data exists, so no partition changes hands mid-stream
    // (a revoked partition's uncommitted records would be read again by its new owner).
    let produced = Arc::new(AtomicBool::new(false));
    let assigned = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let deadline = Instant::now() + Duration::from_secs(180);
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let (cfg, produced, assigned) = (cfg.clone(), produced.clone(), assigned.clone());
            std::thread::spawn(move || {
                let mut src = KafkaSource::new(&cfg, Validator::default()).unwrap();
                let mut seen = Seen::default();
                let mut last = Instant::now();
                loop {
                    match src.poll() {
                        Poll::Ready(b) => {
                            last = Instant::now();
                            seen.batches.push(b);
                        }
                        Poll::Pending => std::thread::sleep(Duration::from_millis(2)),
                        Poll::Done => break,
                    }
                    assigned[i].store(src.assignment().len(), Ordering::Release);
                    let quiet = produced.load(Ordering::Acquire) && last.elapsed() > Duration::from_secs(3);
                    if quiet || Instant::now() > deadline {
                        break;
                    }
                }
                (seen, src.assignment())
            })
        })
        .collect();
    let join_start = Instant::now();
    while !(assigned.iter().all(|a| a.load(Ordering::Acquire) > 0)
        && assigned.iter().map(|a| a.load(Ordering::Acquire)).sum::<usize>() == 6)
    {
        assert!(join_start.elapsed() < Duration::from_secs(60), "group did not settle");
        std::thread::sleep(Duration::from_millis(50));
    }
    let settle = join_start.elapsed();

    let lines = gen_lines(&[&ta, &tb], 3000, 11);
    let produce_start = Instant::now();
    let stats = produce_jsonl(&brokers, std::io::Cursor::new(lines.clone()), 3).unwrap();
    assert_eq!((stats.produced, stats.skipped, stats.topics), (3000, 0, 2));
    // Tenant b's events on tenant a's topic: rejected as tenant_mismatch. One to the excluded topic.
    let p = producer(&brokers);
    let mismatched: Vec<&str> = lines.lines().filter(|l| l.contains(&format!("\"{tb}\""))).take(5).collect();
    for l in &mismatched {
        p.send(BaseRecord::to(&topic_a).key("u").payload(*l)).unwrap();
    }
    p.send(BaseRecord::to(&topic_x).key("u").payload(mismatched[0])).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
    let produce_time = produce_start.elapsed();
    produced.store(true, Ordering::Release);

    let results: Vec<(Seen, Vec<(String, i32)>)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    // The two members split the six partitions.
    let (p0, p1) = (results[0].0.partitions(), results[1].0.partitions());
    assert!(p0.is_disjoint(&p1), "a partition was read by both members: {p0:?} {p1:?}");
    assert!(!results[0].1.is_empty() && !results[1].1.is_empty());
    let all: BTreeSet<_> = results[0].1.iter().chain(&results[1].1).cloned().collect();
    assert_eq!(all.len(), 6, "assignments {all:?}");
    assert!(all.iter().all(|(t, _)| *t == topic_a || *t == topic_b));
    // Every event exactly once across both.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (seen, _) in &results {
        for id in seen.event_ids() {
            *counts.entry(id).or_default() += 1;
        }
    }
    let expected: BTreeSet<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected.len(), 3000);
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(counts.values().all(|&c| c == 1), "duplicates: {:?}", counts.iter().filter(|(_, c)| **c > 1).count());
    // The mismatched ones (and only they) were rejected.
    let rejected: Vec<(Reason, String)> = results
        .iter()
        .flat_map(|(s, _)| &s.batches)
        .flat_map(|b| {
            let Origin::Kafka { topic, .. } = &b.origin else { panic!() };
            b.records
                .iter()
                .filter_map(move |r| r.parsed.as_ref().err().map(|e| (e.rejection.reason, topic.to_string())))
        })
        .collect();
    assert_eq!(rejected.len(), 5, "{rejected:?}");
    assert!(rejected.iter().all(|(r, t)| *r == Reason::TenantMismatch && *t == topic_a));
    for (seen, _) in &results {
        check_prior_max_ts(seen);
    }
    let batches: usize = results.iter().map(|(s, _)| s.batches.len()).sum();
    eprintln!(
        "split: group settled in {settle:?}, produced 3006 in {produce_time:?}, {batches} batches, \
         per member {:?} records, total {:?}",
        results.iter().map(|(s, _)| s.batches.iter().map(|b| b.records.len()).sum::<usize>()).collect::<Vec<_>>(),
        t0.elapsed()
    );
}

#[test]
fn a_tenant_topic_created_while_consuming_is_picked_up() {
    let t0 = Instant::now();
    let brokers = service("KAFKA_BROKERS");
    let b = base();
    let (ta, tc) = (format!("{b}_a"), format!("{b}_c"));
    create_topics(&brokers, &[&topic_of_tenant(&ta)], 3).unwrap();
    let cfg = source_cfg(&brokers, &unique("g"), format!("^user-behaviors-{b}_[a-z]+$"));
    let mut src = KafkaSource::new(&cfg, Validator::default()).unwrap();
    produce_jsonl(&brokers, std::io::Cursor::new(gen_lines(&[&ta], 50, 1)), 3).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = drain(&mut src, |s, _| s.event_ids().len() >= 50 || Instant::now() > deadline);
    assert_eq!(seen.event_ids().len(), 50);

    let created = Instant::now();
    let stats = produce_jsonl(&brokers, std::io::Cursor::new(gen_lines(&[&tc], 20, 2)), 3).unwrap();
    assert_eq!(stats.produced, 20);
    let topic_c = topic_of_tenant(&tc);
    let seen = drain(&mut src, |s, _| {
        let from_c =
            s.batches.iter().filter(|b| matches!(&b.origin, Origin::Kafka { topic, .. } if **topic == *topic_c));
        from_c.map(|b| b.records.len()).sum::<usize>() >= 20 || created.elapsed() > Duration::from_secs(30)
    });
    let picked_up = created.elapsed();
    // The rebalance may hand topic a's partitions out again: records not committed are read again.
    let from_c: usize = seen
        .batches
        .iter()
        .filter(|b| matches!(&b.origin, Origin::Kafka { topic, .. } if **topic == *topic_c))
        .map(|b| b.records.len())
        .sum();
    assert_eq!(from_c, 20, "new topic not consumed within 30 s");
    assert!(picked_up < Duration::from_secs(30));
    eprintln!("new topic: picked up in {picked_up:?}, total {:?}", t0.elapsed());
}

#[test]
fn committed_offsets_are_where_a_new_member_resumes() {
    let t0 = Instant::now();
    let (brokers, b, ta, _) = one_tenant_topic();
    let group = unique("g");
    let mut cfg = source_cfg(&brokers, &group, format!("^user-behaviors-{b}_[a-z]+$"));
    cfg.exit_when_idle_ms = Some(4000);
    let first = gen_lines(&[&ta], 300, 21);
    produce_jsonl(&brokers, std::io::Cursor::new(first), 3).unwrap();

    let mut src = KafkaSource::new(&cfg, Validator::default()).unwrap();
    let limit = Instant::now() + Duration::from_secs(90);
    let seen1 = drain(&mut src, |_, _| Instant::now() > limit); // until exit_when_idle
    eprintln!("resume: first member done after {:?}", t0.elapsed());
    assert_eq!(seen1.event_ids().len(), 300);
    let committer = src.committer();
    let positions = committer.positions();
    assert_eq!(positions.len(), 3, "{positions:?}");
    assert_eq!(src.commit_processed().unwrap(), 3);
    let committed = committer.committed(Duration::from_secs(10)).unwrap();
    assert_eq!(committed, positions, "the group's committed offsets are the positions handed out");
    // The committer shares the consumer: both must go for the member to leave the group.
    drop(committer);
    drop(src);

    let second = gen_lines(&[&ta], 200, 22);
    produce_jsonl(&brokers, std::io::Cursor::new(second.clone()), 3).unwrap();
    cfg.exit_when_idle_ms = Some(8000);
    let mut src2 = KafkaSource::new(&cfg, Validator::default()).unwrap();
    let limit = Instant::now() + Duration::from_secs(90);
    let seen2 = drain(&mut src2, |_, _| Instant::now() > limit);
    let ids2: BTreeSet<String> = seen2.event_ids().into_iter().collect();
    let expected: BTreeSet<String> = second
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen2.event_ids().len(), 200, "no committed record is delivered again");
    assert_eq!(ids2, expected);
    // Each partition resumes exactly at its committed offset.
    for (t, p, o) in &positions {
        let firsts: Vec<u64> = seen2
            .batches
            .iter()
            .filter(|b| b.origin == Origin::Kafka { topic: t.as_str().into(), partition: *p })
            .map(|b| b.records[0].offset)
            .collect();
        if let Some(f) = firsts.first() {
            assert_eq!(*f as i64, *o, "partition {p} resumed at its committed offset");
        }
    }
    eprintln!("resume: total {:?}", t0.elapsed());
}

#[test]
fn a_partition_moved_between_live_members_is_read_once_and_committed_by_its_new_owner() {
    let t0 = Instant::now();
    let (brokers, b, ta, topic) = one_tenant_topic();
    let cfg = source_cfg(&brokers, &unique("g"), format!("^user-behaviors-{b}_[a-z]+$"));
    let (first, handoffs, mut a, mut seen_a) = member_a_reads_most_alone(&cfg, &brokers, &ta, 31);

    // Member B of the same process joins: a cooperative rebalance moves a partition
    // from A to B. Both keep polling (A must take part in the rebalance).
    let mut b_src = KafkaSource::new(&cfg, Validator::default()).unwrap().with_handoffs(handoffs.clone());
    let mut seen_b = Seen::default();
    let join = Instant::now();
    while b_src.assignment().is_empty() || a.assignment().len() + b_src.assignment().len() != 3 {
        assert!(join.elapsed() < Duration::from_secs(60), "B got no partition");
        poll_both(&mut a, &mut b_src, &mut seen_a, &mut seen_b);
    }
    let moved = b_src.assignment();
    assert!(handoffs.is_empty(), "every partition A left was taken over");
    // More input after the move: B reads its partitions' new records, A its own.
    let second = gen_lines(&[&ta], 1000, 32);
    produce_jsonl(&brokers, std::io::Cursor::new(second.clone()), 3).unwrap();
    poll_both_until_all_read(&mut a, &mut b_src, &mut seen_a, &mut seen_b, 3000, t0 + Duration::from_secs(150));

    // Every event exactly once across A and B (B did not re-read what A had read).
    assert_each_read_once(&seen_a, &seen_b, &[&first, &second], &format!("moved: {moved:?}"));
    assert!(seen_b.event_ids().len() < 3000 && !seen_b.batches.is_empty(), "B read its share only");

    // B commits the moved partition's records A had read, too: after the drain the
    // group's committed offsets are the ends of the three partitions.
    let (ca, cb) = (a.committer(), b_src.committer());
    assert_eq!(a.commit_processed().unwrap() + b_src.commit_processed().unwrap(), 3);
    let mut committed = ca.committed(Duration::from_secs(10)).unwrap();
    committed.extend(cb.committed(Duration::from_secs(10)).unwrap());
    committed.sort();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for batch in seen_a.batches.iter().chain(&seen_b.batches) {
        let Origin::Kafka { partition, .. } = &batch.origin else { panic!() };
        let last = batch.records.last().unwrap().offset as i64 + 1;
        let e = ends.entry(*partition).or_default();
        *e = (*e).max(last);
    }
    let expected_commits: Vec<(String, i32, i64)> = ends.iter().map(|(p, o)| (topic.clone(), *p, *o)).collect();
    assert_eq!(committed, expected_commits);
    assert_eq!(ends.values().sum::<i64>(), 3000, "the partitions' ends hold every record");
    eprintln!(
        "hand-off: moved {moved:?}, A read {}, B read {}, total {:?}",
        seen_a.event_ids().len(),
        seen_b.event_ids().len(),
        t0.elapsed()
    );
}

/// Produces 2,000 events to the test's topic; member A (with a fresh hand-off table) reads at
/// least 1,500 of them alone, committing nothing (the sinks never acknowledged).
fn member_a_reads_most_alone(
    cfg: &KafkaConfig,
    brokers: &str,
    tenant: &str,
    seed: u64,
) -> (String, Handoffs, KafkaSource, Seen) {
    let first = gen_lines(&[tenant], 2000, seed);
    produce_jsonl(brokers, std::io::Cursor::new(first.clone()), 3).unwrap();
    let handoffs = Handoffs::new();
    let mut a = KafkaSource::new(cfg, Validator::default()).unwrap().with_handoffs(handoffs.clone());
    let limit = Instant::now() + Duration::from_secs(90);
    let seen_a = drain(&mut a, |s, _| s.event_ids().len() >= 1500 || Instant::now() > limit);
    assert!(seen_a.event_ids().len() >= 1500, "member A read {}", seen_a.event_ids().len());
    assert_eq!(a.assignment().len(), 3);
    (first, handoffs, a, seen_a)
}

/// Polls both members until together they handed out at least `want` events and then
/// nothing more for 3 s; fails at `deadline`.
fn poll_both_until_all_read(
    a: &mut KafkaSource,
    b: &mut KafkaSource,
    seen_a: &mut Seen,
    seen_b: &mut Seen,
    want: usize,
    deadline: Instant,
) {
    let mut last = Instant::now();
    let mut total = 0;
    while last.elapsed() < Duration::from_secs(3) {
        assert!(Instant::now() < deadline, "read {total} of {want}");
        poll_both(a, b, seen_a, seen_b);
        let now_total = seen_a.event_ids().len() + seen_b.event_ids().len();
        if now_total != total || now_total < want {
            total = now_total;
            last = Instant::now();
        }
    }
}

/// Polls each member once, keeping what it hands out; sleeps briefly when neither had anything.
fn poll_both(a: &mut KafkaSource, b: &mut KafkaSource, seen_a: &mut Seen, seen_b: &mut Seen) {
    let mut any = false;
    for (src, seen) in [(a, seen_a), (b, seen_b)] {
        if let Poll::Ready(batch) = src.poll() {
            seen.batches.push(batch);
            src.processed(0);
            any = true;
        }
    }
    if !any {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every event of the produced `inputs` was handed out exactly once by the two members together.
fn assert_each_read_once(a: &Seen, b: &Seen, inputs: &[&str], context: &str) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in a.event_ids().into_iter().chain(b.event_ids()) {
        *counts.entry(id).or_default() += 1;
    }
    let expected: BTreeSet<String> = inputs
        .iter()
        .flat_map(|input| input.lines())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"].as_str().unwrap().to_string())
        .collect();
    let produced: usize = inputs.iter().map(|input| input.lines().count()).sum();
    assert_eq!(expected.len(), produced, "event ids are unique");
    let dups = counts.values().filter(|&&c| c > 1).count();
    assert_eq!(dups, 0, "{dups} events read by both members ({context})");
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), expected, "{context}");
}

#[test]
fn a_partition_assigned_before_its_local_holder_let_go_waits_for_the_hand_off() {
    let t0 = Instant::now();
    let (brokers, b, ta, _topic) = one_tenant_topic();
    let mut cfg = source_cfg(&brokers, &unique("g"), format!("^user-behaviors-{b}_[a-z]+$"));
    // A member that does not poll for this long is dropped from the group by its own client
    // (the broker's minimum session timeout is 6 s; this may not be below it).
    cfg.properties.insert("max.poll.interval.ms".into(), "7000".into());
    let (first, handoffs, mut a, mut seen_a) = member_a_reads_most_alone(&cfg, &brokers, &ta, 41);

    // A stops polling (a worker stuck in a slow sink): its client leaves the group, and the
    // coordinator gives all three partitions to B while A has not yet seen them revoked. This
    // is the order a restarted coordinator can produce, too.
    let mut b_src = KafkaSource::new(&cfg, Validator::default()).unwrap().with_handoffs(handoffs.clone());
    let mut seen_b = Seen::default();
    while b_src.assignment().len() != 3 {
        assert!(t0.elapsed() < Duration::from_secs(120), "B did not get A's partitions");
        if let Poll::Ready(batch) = b_src.poll() {
            seen_b.batches.push(batch);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let waited_from = Instant::now();
    while waited_from.elapsed() < Duration::from_secs(3) {
        if let Poll::Ready(batch) = b_src.poll() {
            seen_b.batches.push(batch);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Without waiting, B would have read from offset 0 (nothing committed) what A already had.
    assert_eq!(seen_b.event_ids().len(), 0, "B waits while A still holds the partitions");
    assert_eq!(b_src.max_ts_floor(), i64::MIN, "the partitions B waits for hold its watermark back");

    // A polls again: it sees the partitions revoked and hands them over; B continues where A
    // stopped. Then more input, read by whoever owns each partition by then.
    let second = gen_lines(&[&ta], 1000, 42);
    produce_jsonl(&brokers, std::io::Cursor::new(second.clone()), 3).unwrap();
    poll_both_until_all_read(&mut a, &mut b_src, &mut seen_a, &mut seen_b, 3000, t0 + Duration::from_secs(200));
    assert_each_read_once(&seen_a, &seen_b, &[&first, &second], "A kicked out, B assigned first");
    assert!(!seen_b.batches.is_empty(), "B read the partitions once handed over");
    eprintln!(
        "late revoke: A read {}, B read {}, total {:?}",
        seen_a.event_ids().len(),
        seen_b.event_ids().len(),
        t0.elapsed()
    );
}

#[test]
fn a_partition_moved_to_a_member_whose_floor_is_ahead_finds_no_watermark_past_its_records() {
    let t0 = Instant::now();
    let (brokers, b, ta, topic) = one_tenant_topic();
    let cfg = source_cfg(&brokers, &unique("g"), format!("^user-behaviors-{b}_[a-z]+$"));
    // The pipeline's set-up: one coverage and one hand-off table per process.
    let coverage = Coverage::new();
    coverage.set_inputs((0..3).map(|p| (topic.clone(), p)).collect());
    let handoffs = Handoffs::new();
    let member = |slot| {
        KafkaSource::new(&cfg, Validator::default())
            .unwrap()
            .with_handoffs(handoffs.clone())
            .with_coverage(coverage.clone(), slot)
    };
    let (mut a, mut b_src) = (member(0), member(1));
    let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
    while b_src.assignment().is_empty() || a.assignment().is_empty() || !coverage.is_complete() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the two members did not split the partitions");
        poll_both(&mut a, &mut b_src, &mut seen_a, &mut seen_b);
    }
    assert_eq!(seen_a.event_ids().len() + seen_b.event_ids().len(), 0, "the topic is empty yet");
    assert_eq!(b_src.max_ts_floor(), i64::MIN, "B has read nothing");

    // A's partitions get recent events, B's events 30 minutes older, which B never reads
    // (its worker is slow). Event times are set per partition, so the test knows the order.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let moved: Vec<i32> = b_src.assignment().into_iter().map(|(_, p)| p).collect();
    let prod = producer(&brokers);
    let mut old_ts = BTreeSet::new();
    for (i, line) in gen_lines(&[&ta], 600, 51).lines().enumerate() {
        let partition = (i % 3) as i32;
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = if moved.contains(&partition) { now - 2_400_000 } else { now - 600_000 } + i as i64;
        if moved.contains(&partition) {
            old_ts.insert(ts);
        }
        v["timestamp"] = ts.into();
        let payload = v.to_string();
        prod.send(BaseRecord::<(), str>::to(&topic).partition(partition).payload(&payload)).unwrap();
    }
    prod.flush(Duration::from_secs(10)).unwrap();
    let a_share = 600 - old_ts.len();

    // A reads all of its own: its own floor is ten minutes ago, yet B holds an unread partition.
    // Each batch is checked against the highest floor A reported before it: its worker's
    // capability (the ingest's lateness bound) follows the floor and never moves back.
    let mut too_late = Vec::new();
    let mut floor = i64::MIN;
    let mut read_batch = |a: &mut KafkaSource, seen: &mut Seen| {
        floor = floor.max(a.max_ts_floor());
        if let Poll::Ready(batch) = a.poll() {
            a.processed(0);
            let oldest = batch.records.iter().filter_map(|r| r.parsed.as_ref().ok().map(|e| e.ts)).min();
            if oldest.is_some_and(|o| o < floor) {
                too_late.push((batch.origin.clone(), (floor - oldest.unwrap()) / 60_000));
            }
            seen.batches.push(batch);
        }
    };
    while seen_a.event_ids().len() < a_share {
        assert!(t0.elapsed() < Duration::from_secs(120), "A read {} of {a_share}", seen_a.event_ids().len());
        read_batch(&mut a, &mut seen_a);
    }
    // B's worker fails; its partitions move to A, which reads their old events from offset 0.
    drop(b_src);
    let mut moved_seen = Seen::default();
    while moved_seen.event_ids().len() < old_ts.len() {
        assert!(t0.elapsed() < Duration::from_secs(150), "A read {} moved events", moved_seen.event_ids().len());
        read_batch(&mut a, &mut moved_seen);
    }
    // Without the process-wide floor, A's capability was ten minutes ahead and the moved
    // partitions' first batches were 30 minutes behind it.
    assert_eq!(too_late, vec![], "batches older than A's floor before them (origin, minutes behind)");
    assert!(moved_seen.partitions().iter().all(|(_, p)| moved.contains(p)), "A's own were read before");
    // Once A reads everything, its floor is its own again: the lowest partition maximum.
    let floor = a.max_ts_floor();
    let lowest_max = (0..3)
        .map(|p| {
            seen_a
                .batches
                .iter()
                .chain(&moved_seen.batches)
                .filter(|b| matches!(&b.origin, Origin::Kafka { partition, .. } if *partition == p))
                .flat_map(|b| &b.records)
                .filter_map(|r| r.parsed.as_ref().ok().map(|e| e.ts))
                .max()
                .unwrap()
        })
        .min()
        .unwrap();
    assert_eq!(floor, lowest_max, "the failed member holds A back no more");
    assert_eq!(a.assignment().len(), 3);
    eprintln!("floor cap: moved {moved:?}, {} old events, total {:?}", old_ts.len(), t0.elapsed());
}

/// Reads `n` messages of partition 0 of `topic` from the beginning.
fn read_topic(brokers: &str, topic: &str, n: usize) -> Vec<OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            out.push(m.unwrap().detach());
        }
    }
    // Nothing more than expected.
    let extra_deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < extra_deadline {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            out.push(m.unwrap().detach());
        }
    }
    out
}

fn key(m: &OwnedMessage) -> Option<&str> {
    m.key().map(|k| std::str::from_utf8(k).unwrap())
}

fn headers(m: &OwnedMessage) -> Vec<(String, String)> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sink_publishes_every_output_kind() {
    let t0 = Instant::now();
    let brokers = service("KAFKA_BROKERS");
    let u = base();
    let cfg = KafkaSinkConfig {
        brokers: brokers.clone(),
        profile_topic: format!("{u}-profiles"),
        item_stats_topic: format!("{u}-item-stats"),
        metrics_topic: format!("{u}-metrics"),
        dlq_topic: format!("{u}-dlq"),
        ..KafkaSinkConfig::default()
    };
    create_topics(&brokers, &[&cfg.profile_topic, &cfg.item_stats_topic, &cfg.metrics_topic, &cfg.dlq_topic], 1)
        .unwrap();
    let profile = ProfileDoc {
        tenant_id: "acme".into(),
        user_id: "u1".into(),
        scenario_id: "feed".into(),
        counts: ActionCounts([1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        watch_count: 0,
        watch_seconds: 0.0,
        category_counts: [("news".into(), 4)].into_iter().collect(),
        favorite_categories: vec!["news".into()],
        active_hours: [0; 24],
        first_seen: 1,
        last_active_at: 2,
        recent_items: vec!["i1".into()],
        updated_window: 300_000,
    };
    let hot = HotList {
        tenant_id: "acme".into(),
        scenario_id: "feed".into(),
        category: None,
        window_end: 3_600_000,
        entries: vec![("i1".into(), 9.5), ("i2".into(), 3.0), ("i3".into(), 0.5)],
    };
    let row = MetricsRow {
        experiment_id: "none".into(),
        variant: "none".into(),
        impressions: 10,
        clicks: 2,
        views: 0,
        likes: 0,
        shares: 0,
        comments: 0,
        add_carts: 0,
        orders: 0,
        payments: 0,
        ctr: 0.2,
        avg_watch_duration: 0.0,
        avg_completion_rate: 0.0,
        conversion_rate: 0.0,
        interaction_rate: 0.0,
        gmv: 0.0,
    };
    let metrics =
        MetricsWindow { tenant_id: "acme".into(), scenario_id: "feed".into(), window_start: 60_000, rows: vec![row] };
    let dead = |reason: &str, source| DeadLetter {
        reason: reason.into(),
        field: Some("tenant_id".into()),
        detail: "d".into(),
        source,
        payload: "{\"x\":1}".into(),
    };
    let dead_kafka =
        dead("tenant_mismatch", SourcePos::Kafka { topic: "user-behaviors-acme".into(), partition: 2, offset: 41 });
    let dead_file = dead("bad_json", SourcePos::File { path: "in.jsonl".into(), line: 7 });
    let outputs = vec![
        Output::Profile(Arc::new(profile.clone())),
        Output::Hot(hot.clone()),
        Output::Hot(HotList { category: Some("news".into()), ..hot.clone() }),
        Output::Metrics(metrics.clone()),
        Output::Dead(Box::new(dead_kafka.clone())),
        Output::Dead(Box::new(dead_file.clone())),
    ];
    let mut sink = KafkaSink::new(cfg.clone()).unwrap();
    sink.write(&outputs).unwrap();
    sink.write(&[]).unwrap();
    let flush_start = Instant::now();
    sink.flush().unwrap();
    let flush_time = flush_start.elapsed();
    assert_eq!((sink.produced(), sink.errors(), sink.retries()), (7, 0, 0));
    assert_eq!(sink.pending(), 0);

    let p = read_topic(&brokers, &cfg.profile_topic, 1);
    assert_eq!(p.len(), 1);
    assert_eq!(key(&p[0]), Some("acme:u1:feed"));
    assert_eq!(serde_json::from_slice::<ProfileDoc>(p[0].payload().unwrap()).unwrap(), profile);

    let h = read_topic(&brokers, &cfg.item_stats_topic, 3);
    assert_eq!(h.len(), 3, "only the scenario-wide list is published");
    for (i, m) in h.iter().enumerate() {
        let v: ItemStatsUpdate = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(key(m), Some(format!("acme:{}", hot.entries[i].0).as_str()));
        assert_eq!(v.item_id, hot.entries[i].0.as_str());
        assert_eq!((v.rank, v.score, v.window_end), (i as u32 + 1, hot.entries[i].1, 3_600_000));
        assert_eq!((v.tenant_id.as_str(), v.scenario_id.as_str()), ("acme", "feed"));
    }

    let m = read_topic(&brokers, &cfg.metrics_topic, 1);
    assert_eq!(m.len(), 1);
    assert_eq!(key(&m[0]), Some("acme:feed"));
    assert_eq!(serde_json::from_slice::<MetricsWindow>(m[0].payload().unwrap()).unwrap(), metrics);

    let d = read_topic(&brokers, &cfg.dlq_topic, 2);
    assert_eq!(d.len(), 2);
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(key(&d[0]), None);
    assert_eq!(serde_json::from_slice::<DeadLetter>(d[0].payload().unwrap()).unwrap(), dead_kafka);
    assert_eq!(
        headers(&d[0]),
        vec![
            s("reason", "tenant_mismatch"),
            s("source_topic", "user-behaviors-acme"),
            s("source_partition", "2"),
            s("source_offset", "41")
        ]
    );
    assert_eq!(serde_json::from_slice::<DeadLetter>(d[1].payload().unwrap()).unwrap(), dead_file);
    assert_eq!(headers(&d[1]), vec![s("reason", "bad_json"), s("source_file", "in.jsonl"), s("source_line", "7")]);
    eprintln!("sink: flush {flush_time:?}, total {:?}", t0.elapsed());
}

#[test]
fn catalog_loads_from_an_item_updates_topic() {
    let t0 = Instant::now();
    let brokers = service("KAFKA_BROKERS");
    let topic = format!("{}-item-updates", base());
    create_topics(&brokers, &[&topic], 2).unwrap();
    let p = producer(&brokers);
    let items = [
        r#"{"tenant_id":"acme","scenario_id":"feed","item_id":"i1","category":"news"}"#,
        r#"{"tenant_id":"acme","item_id":"i2","category":"music"}"#,
        r#"not json"#,
        r#"{"tenant_id":"acme","item_id":"i1","category":"sports"}"#,
    ];
    for v in items {
        // Same key -> same partition, so the later upsert of i1 wins.
        let key = if v.contains("\"i2\"") { "acme:i2" } else { "acme:i1" };
        p.send(BaseRecord::to(&topic).key(key).payload(v)).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let cfg = KafkaConfig { brokers: brokers.clone(), group_id: unique("g"), ..KafkaConfig::default() };
    let mut catalog = recflow_sources::Catalog::default();
    let n = recflow_sources::kafka_catalog::consume_items_from(&cfg, &topic, &mut catalog, Duration::from_secs(30))
        .unwrap();
    assert_eq!(n, 3, "the bad record is skipped");
    assert_eq!(catalog.len(), 2);
    assert_eq!(catalog.category("acme", "i1").map(|c| c.as_str()), Some("sports"));
    assert_eq!(catalog.category("acme", "i2").map(|c| c.as_str()), Some("music"));
    let missing = recflow_sources::kafka_catalog::consume_items_from(
        &cfg,
        &format!("{topic}-missing"),
        &mut catalog,
        Duration::from_secs(10),
    );
    assert_eq!(missing.unwrap(), 0, "a missing topic is an empty catalog");
    eprintln!("catalog: total {:?}", t0.elapsed());
}
