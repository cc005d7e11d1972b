//! The dataflow: sources -> ingest -> the four jobs -> sinks, one instance
//! per timely worker, records exchanged between workers by key.

use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::{Concatenate, OkErr};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::{Scope, StreamVec};

use recflow_operators::hot_items::{HotMerge, HotOut, HotPanes, HotRec};
use recflow_operators::metrics::{MetPartial, MetricsMerge, MetricsPreAgg};
use recflow_operators::profile::{ProfRec, ProfileWindows};
use recflow_operators::route::key_hash;
use recflow_operators::windowed::windowed;
use recflow_operators::{ingest, Counters, IngestConfig, Minute};
use recflow_schemas::{HotList, Output};
use recflow_sinks::Sink;
use recflow_sources::Source;

use crate::config::Config;

/// Builds this worker's dataflow: all four jobs fed by `source`, results into `sinks`.
pub fn build<'s>(
    scope: Scope<'s, Minute>,
    cfg: &Config,
    source: Box<dyn Source>,
    ingest_cfg: IngestConfig,
    sinks: Vec<Box<dyn Sink>>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let counters: Arc<Counters> = ingest_cfg.counters.clone();
    let streams = ingest(scope, source, ingest_cfg);

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
    let profiles = windowed(streams.profile, by_user, "Profiles", ProfileWindows::new(cfg.profile(), counters.clone()));

    // Job 4: metrics, pre-aggregated locally, merged per (tenant, scenario).
    let pre = windowed(streams.metrics, Pipeline, "MetricsPreAgg", MetricsPreAgg::default());
    let by_tenant_scenario = Exchange::new(|p: &MetPartial| key_hash(&[&p.key.tenant_id, &p.key.scenario_id]));
    let metrics = windowed(pre, by_tenant_scenario, "Metrics", MetricsMerge::new(counters));

    // Job 1 (raw log) and the dead letters travel in `streams.log`.
    let outputs = scope.concatenate([
        streams.log,
        hot.map(Output::Hot),
        stats.map(Output::ItemStats),
        profiles.map(|p| Output::Profile(Arc::new(p))),
        metrics.map(Output::Metrics),
    ]);
    sink_all(outputs, sinks, errors);
}

/// Hands every output batch to each sink; flushes when the input is done.
/// A failing sink is reported once and skipped (embedded sinks are local
/// files and memory; service sinks retry inside `write`).
fn sink_all(stream: StreamVec<'_, Minute, Output>, mut sinks: Vec<Box<dyn Sink>>, errors: Arc<Mutex<Vec<String>>>) {
    let mut flushed = false;
    let mut failed = vec![false; sinks.len()];
    stream.sink(Pipeline, "Sinks", move |(input, frontier)| {
        let report = |i: usize, name: &str, e: recflow_sinks::SinkError, failed: &mut Vec<bool>| {
            tracing::error!(sink = name, error = %e, "sink failed");
            failed[i] = true;
            errors.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{name}: {e}"));
        };
        input.for_each(|_cap, data| {
            for (i, s) in sinks.iter_mut().enumerate() {
                if !failed[i] {
                    if let Err(e) = s.write(data) {
                        let name = s.name();
                        report(i, name, e, &mut failed);
                    }
                }
            }
        });
        if frontier.is_empty() && !flushed {
            flushed = true;
            for (i, s) in sinks.iter_mut().enumerate() {
                if !failed[i] {
                    if let Err(e) = s.flush() {
                        let name = s.name();
                        report(i, name, e, &mut failed);
                    }
                }
            }
        }
    });
}
