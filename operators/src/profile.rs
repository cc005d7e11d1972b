//! User profiles: per (tenant, user, scenario), 5-minute tumbling windows
//! folded into a cumulative profile when each window closes.

use std::collections::BTreeMap;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use recflow_schemas::{Action, ActionCounts, Event, ProfileDoc, Str, MINUTE_MS};

use crate::exact::ExactSum;
use crate::time::window_start;
use crate::windowed::WindowLogic;
use crate::{Counters, Minute};

/// Hash maps keyed by tenant-supplied ids: fast, with a random seed (HashDoS-resistant).
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// Profile knobs (config `[profiles]`).
#[derive(Clone, Debug)]
pub struct ProfileConfig {
    pub window_ms: i64,
    pub recent_items: usize,
    pub favorite_categories: usize,
    /// Weight per action, index = `Action::index`.
    pub weights: [u32; 12],
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            window_ms: 300_000,
            recent_items: 20,
            favorite_categories: 3,
            weights: recflow_schemas::ActionWeights::default().to_array(),
        }
    }
}

/// The part of an event the profile job needs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProfRec {
    pub tenant_id: Str,
    pub user_id: Str,
    pub scenario_id: Str,
    pub item_id: Str,
    pub category: Str,
    pub ts: i64,
    pub action: Action,
    pub event_id: Str,
    pub watch_duration: Option<f64>,
}

impl From<&Event> for ProfRec {
    fn from(e: &Event) -> Self {
        ProfRec {
            tenant_id: e.tenant_id.clone(),
            user_id: e.user_id.clone(),
            scenario_id: e.scenario_id.clone(),
            item_id: e.item_id.clone(),
            category: Str::new(e.category_or_unknown()),
            ts: e.ts,
            action: e.action,
            event_id: e.event_id.clone(),
            watch_duration: e.watch_duration,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct UserKey {
    tenant: Str,
    user: Str,
    scenario: Str,
}

/// Order-independent aggregate of some events of one user.
#[derive(Clone, Debug)]
struct Agg {
    counts: [u64; 12],
    watch_seconds: ExactSum,
    category_weights: Vec<(Str, u64)>,
    active_hours: [u64; 24],
    first_seen: i64,
    last_active: i64,
    /// (ts, event_id, item): latest event per item, newest first.
    recent: Vec<(i64, Str, Str)>,
}

impl Default for Agg {
    fn default() -> Self {
        Agg {
            counts: [0; 12],
            watch_seconds: ExactSum::default(),
            category_weights: Vec::new(),
            active_hours: [0; 24],
            first_seen: i64::MAX,
            last_active: i64::MIN,
            recent: Vec::new(),
        }
    }
}

impl Agg {
    fn add(&mut self, r: ProfRec, weight: u32) {
        self.counts[r.action.index()] += 1;
        if r.action.is_watch() {
            if let Some(d) = r.watch_duration {
                self.watch_seconds.add(d);
            }
        }
        if weight > 0 {
            add_weight(&mut self.category_weights, &r.category, weight as u64);
        }
        self.first_seen = self.first_seen.min(r.ts);
        self.last_active = self.last_active.max(r.ts);
        if r.action != Action::Impression {
            let hour = (r.ts.div_euclid(3_600_000)).rem_euclid(24) as usize;
            self.active_hours[hour] += 1;
            note_item(&mut self.recent, (r.ts, r.event_id, r.item_id), usize::MAX);
        }
    }

    /// Folds a later window into this cumulative aggregate.
    fn merge(&mut self, o: Agg, keep_recent: usize) {
        for i in 0..12 {
            self.counts[i] += o.counts[i];
        }
        self.watch_seconds.merge(o.watch_seconds);
        for (c, w) in o.category_weights {
            add_weight(&mut self.category_weights, &c, w);
        }
        for h in 0..24 {
            self.active_hours[h] += o.active_hours[h];
        }
        self.first_seen = self.first_seen.min(o.first_seen);
        self.last_active = self.last_active.max(o.last_active);
        for entry in o.recent {
            note_item(&mut self.recent, entry, keep_recent);
        }
    }
}

fn add_weight(weights: &mut Vec<(Str, u64)>, category: &Str, w: u64) {
    match weights.iter_mut().find(|(c, _)| c == category) {
        Some(e) => e.1 += w,
        None => weights.push((category.clone(), w)),
    }
}

/// Keeps the latest (ts, event_id) per item, newest first, at most `keep`.
fn note_item(recent: &mut Vec<(i64, Str, Str)>, entry: (i64, Str, Str), keep: usize) {
    if let Some(pos) = recent.iter().position(|e| e.2 == entry.2) {
        if (recent[pos].0, &recent[pos].1) >= (entry.0, &entry.1) {
            return;
        }
        recent.remove(pos);
    }
    let at = recent.partition_point(|e| (e.0, &e.1) > (entry.0, &entry.1));
    recent.insert(at, entry);
    recent.truncate(keep);
}

/// The profile job's window logic.
pub struct ProfileWindows {
    cfg: ProfileConfig,
    counters: Arc<Counters>,
    /// Cumulative aggregate over closed windows, per user.
    users: HashMap<UserKey, Agg>,
    /// Window end -> per-user aggregate of that (still open) window.
    open: BTreeMap<i64, HashMap<UserKey, Agg>>,
}

impl ProfileWindows {
    /// Empty state.
    pub fn new(cfg: ProfileConfig, counters: Arc<Counters>) -> Self {
        ProfileWindows { cfg, counters, users: HashMap::default(), open: BTreeMap::new() }
    }
}

/// Builds the document from a cumulative aggregate.
fn document(k: &UserKey, a: &Agg, updated_window: i64, favorites: usize) -> ProfileDoc {
    let total: u64 = a.category_weights.iter().map(|(_, w)| w).sum();
    let mut cats: Vec<(&Str, u64)> = a.category_weights.iter().filter(|(_, w)| *w > 0).map(|(c, w)| (c, *w)).collect();
    cats.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(y.0)));
    ProfileDoc {
        tenant_id: k.tenant.clone(),
        user_id: k.user.clone(),
        scenario_id: k.scenario.clone(),
        counts: ActionCounts(a.counts),
        watch_count: a.counts[Action::View.index()] + a.counts[Action::Play.index()],
        watch_seconds: a.watch_seconds.get(),
        category_counts: cats.iter().map(|(c, w)| ((*c).clone(), *w)).collect(),
        category_scores: cats.iter().map(|(c, w)| ((*c).clone(), *w as f64 / total as f64)).collect(),
        favorite_categories: cats.iter().take(favorites).map(|(c, _)| (*c).clone()).collect(),
        active_hours: a.active_hours.to_vec(),
        first_seen: a.first_seen,
        last_active_at: a.last_active,
        recent_items: a.recent.iter().map(|e| e.2.clone()).collect(),
        updated_window,
    }
}

impl WindowLogic for ProfileWindows {
    type In = ProfRec;
    type Out = ProfileDoc;

    fn absorb(&mut self, r: ProfRec, close_at: &mut dyn FnMut(Minute)) {
        let end = window_start(r.ts, self.cfg.window_ms) + self.cfg.window_ms;
        let weight = self.cfg.weights[r.action.index()];
        let window = self.open.entry(end).or_insert_with(|| {
            close_at((end / MINUTE_MS) as Minute);
            HashMap::default()
        });
        let key = UserKey { tenant: r.tenant_id.clone(), user: r.user_id.clone(), scenario: r.scenario_id.clone() };
        window.entry(key).or_default().add(r, weight);
    }

    fn close(&mut self, close: Minute, out: &mut Vec<ProfileDoc>) {
        let end = close as i64 * MINUTE_MS;
        let Some(window) = self.open.remove(&end) else { return };
        out.reserve(window.len());
        for (k, agg) in window {
            let total = self.users.entry(k.clone()).or_default();
            total.merge(agg, self.cfg.recent_items);
            self.counters.profile_windows.fetch_add(1, Relaxed);
            out.push(document(&k, total, end, self.cfg.favorite_categories));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(item: &str, action: Action, ts: i64, eid: &str) -> ProfRec {
        ProfRec {
            tenant_id: "t".into(),
            user_id: "u".into(),
            scenario_id: "s".into(),
            item_id: item.into(),
            category: if item.starts_with('n') { "news".into() } else { "tech".into() },
            ts,
            action,
            event_id: eid.into(),
            watch_duration: if action.is_watch() { Some(10.5) } else { None },
        }
    }

    fn run(recs: Vec<ProfRec>) -> Vec<ProfileDoc> {
        let mut p = ProfileWindows::new(ProfileConfig::default(), Arc::new(Counters::new(1)));
        let mut closes = std::collections::BTreeSet::new();
        for r in recs {
            p.absorb(r, &mut |m| {
                closes.insert(m);
            });
        }
        let mut out = Vec::new();
        for m in closes {
            p.close(m, &mut out);
        }
        out
    }

    #[test]
    fn recent_items_by_latest_ts_then_event_id_with_out_of_order_input() {
        // Arrival order is not time order; n1 is seen again later, and x/y tie on ts.
        let docs = run(vec![
            rec("n1", Action::Click, 5_000, "e3"),
            rec("n2", Action::Like, 1_000, "e1"),
            rec("x", Action::Click, 7_000, "e5"),
            rec("n1", Action::View, 2_000, "e2"),
            rec("y", Action::Click, 7_000, "e6"),
            rec("imp", Action::Impression, 9_000, "e9"),
            rec("n2", Action::Share, 301_000, "e7"),
        ]);
        assert_eq!(docs.len(), 2, "one update per closed window with data");
        assert_eq!(docs[0].recent_items, vec!["y", "x", "n1", "n2"]);
        assert_eq!(docs[0].updated_window, 300_000);
        assert_eq!(docs[1].recent_items, vec!["n2", "y", "x", "n1"]);
        assert_eq!(docs[1].updated_window, 600_000);
        let d = &docs[1];
        assert_eq!(d.counts["click"], 3);
        assert_eq!(d.counts["impression"], 1);
        assert_eq!(d.counts["payment"], 0);
        assert_eq!(d.watch_count, 1);
        assert_eq!(d.watch_seconds, 10.5);
        // weights: news = click 2 + like 3 + view 1 + share 5 = 11; tech = 2 + 2 = 4; impression adds 0.
        assert_eq!(d.category_counts.get("news"), Some(&11));
        assert_eq!(d.category_counts.get("tech"), Some(&4));
        assert_eq!(d.favorite_categories, vec!["news", "tech"]);
        assert!((d.category_scores["news"] - 11.0 / 15.0).abs() < 1e-15);
        assert_eq!((d.first_seen, d.last_active_at), (1_000, 301_000));
        assert_eq!(d.active_hours[0], 6, "impressions are not activity");
    }

    #[test]
    fn favorites_tie_break_by_name_and_only_positive() {
        let docs = run(vec![
            rec("t1", Action::Click, 1, "a"),
            rec("n1", Action::Click, 2, "b"),
            rec("n2", Action::Impression, 3, "c"),
        ]);
        assert_eq!(docs[0].favorite_categories, vec!["news", "tech"]);
        let docs = run(vec![rec("n2", Action::Impression, 3, "c")]);
        assert!(docs[0].category_counts.is_empty() && docs[0].favorite_categories.is_empty());
        assert!(docs[0].recent_items.is_empty());
    }
}
