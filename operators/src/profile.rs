//! User profiles: per (tenant, user, scenario), 5-minute tumbling windows
//! folded into a cumulative profile when each window closes.
//!
//! The cumulative part outlives any replay window, so a (re)started pipeline
//! reads it back from where it was written ([`ProfileStore`], Mongo): a
//! user's stored document is the base, and replayed windows it already
//! contains (end <= its `updated_window`) are not added again; the stored
//! document is re-sent instead so every sink holds it.
//!
//! Documents are coalesced: a closed window only marks its users, and the
//! latest document of each marked user is built and sent at most every
//! `emit_every` (and at the end of the input). Live, that is each window's
//! document a moment after it closes; catching up, where many windows close
//! per second, a user is built and written once per flush instead of once
//! per window (Kafka Streams' record cache does the same for KTables).

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use recflow_schemas::{Action, ActionCounts, CategoryMap, Event, IdMap, ProfileDoc, Str, MINUTE_MS};

use crate::exact::ExactSum;
use crate::time::window_start;
use crate::topk::top_k_ids;
use crate::windowed::WindowLogic;
use crate::{Counters, Minute};

/// Profile knobs (config `[profiles]`).
#[derive(Clone, Debug)]
pub struct ProfileConfig {
    pub window_ms: i64,
    pub recent_items: usize,
    pub favorite_categories: usize,
    /// Weight per action, index = `Action::index`.
    pub weights: [u32; 12],
    /// How long a closed window's documents may wait to be coalesced with
    /// later ones (zero: every window's documents are sent when it closes).
    pub emit_every: Duration,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            window_ms: 300_000,
            recent_items: 20,
            favorite_categories: 3,
            weights: recflow_schemas::ActionWeights::default().to_array(),
            emit_every: Duration::from_secs(1),
        }
    }
}

/// Documents handed out per flush call (about one 5-minute window's users on the bench).
const FLUSH_CHUNK: usize = 16_384;

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
            category: e.category_id(),
            ts: e.ts,
            action: e.action,
            event_id: e.event_id.clone(),
            watch_duration: e.watch_duration,
        }
    }
}

/// An event waiting in its open window: the user is its slot, so the
/// user's key is not kept per event (half the size of a [`ProfRec`]).
struct OpenEvent {
    ts: i64,
    action: Action,
    item: Str,
    category: Str,
    event_id: Str,
    watch_duration: Option<f64>,
}

/// (tenant, user, scenario) of a stored profile.
pub type ProfileKey = (Str, Str, Str);

/// Where profiles written by earlier runs are read back.
pub trait ProfileStore: Send {
    /// The stored documents of those `keys` that exist (any order); retries inside.
    fn load(&mut self, keys: &[ProfileKey]) -> Result<Vec<ProfileDoc>, String>;
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct UserKey {
    tenant: Str,
    user: Str,
    scenario: Str,
}

/// Order-independent aggregate of a user's events.
#[derive(Clone, Debug)]
struct Agg {
    counts: [u64; 12],
    watch_seconds: ExactSum,
    /// (category, Σ weight), in name order.
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
    /// The aggregate a stored document stands for. Its recent items get
    /// synthetic times below the document's window end, in their order: every
    /// later window's events are newer, so merging stays exact.
    fn from_doc(d: &ProfileDoc) -> Self {
        let mut watch_seconds = ExactSum::default();
        watch_seconds.add(d.watch_seconds);
        let newest = d.updated_window - 1;
        Agg {
            counts: d.counts.0,
            watch_seconds,
            category_weights: d.category_counts.iter().map(|(c, w)| (c.clone(), *w)).collect(),
            active_hours: d.active_hours,
            first_seen: d.first_seen,
            last_active: d.last_active_at,
            recent: d
                .recent_items
                .iter()
                .enumerate()
                .map(|(i, item)| (newest - i as i64, Str::default(), item.clone()))
                .collect(),
        }
    }

    /// Adds one event, weighted per action; `keep` bounds the recent items.
    /// The result does not depend on the order events are added in (recent
    /// items are ranked by (ts, event_id), and an item cut off could never
    /// rank again).
    fn add(&mut self, r: &OpenEvent, weights: &[u32; 12], keep: usize) {
        let weight = weights[r.action.index()];
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
            note_item(&mut self.recent, (r.ts, &r.event_id, &r.item), keep);
        }
    }
}

/// Adds `w` to `category`, keeping the list in name order.
fn add_weight(weights: &mut Vec<(Str, u64)>, category: &Str, w: u64) {
    match weights.binary_search_by(|(c, _)| c.cmp(category)) {
        Ok(i) => weights[i].1 += w,
        Err(i) => weights.insert(i, (category.clone(), w)),
    }
}

/// Keeps the latest (ts, event_id) per item, newest first, at most `keep`.
fn note_item(recent: &mut Vec<(i64, Str, Str)>, (ts, event_id, item): (i64, &Str, &Str), keep: usize) {
    if let Some(pos) = recent.iter().position(|e| e.2 == *item) {
        if (recent[pos].0, &recent[pos].1) >= (ts, event_id) {
            return;
        }
        recent.remove(pos);
    }
    let at = recent.partition_point(|e| (e.0, &e.1) > (ts, event_id));
    recent.insert(at, (ts, event_id.clone(), item.clone()));
    recent.truncate(keep);
}

/// A user's cumulative profile.
struct User {
    key: UserKey,
    total: Agg,
    /// End of the last window in `total` that came from the store (nothing
    /// up to it is added again).
    stored_until: i64,
    /// Whether the store was asked for this user's document yet.
    loaded: bool,
    /// `updated_window` of the document not sent yet (`i64::MIN`: none waits).
    unsent: i64,
}

impl User {
    fn new(key: UserKey, loaded: bool) -> Self {
        User { key, total: Agg::default(), stored_until: i64::MIN, loaded, unsent: i64::MIN }
    }
}

/// The profile job's window logic.
///
/// Users live in a slab found by key once per event, when it arrives; an
/// open window is just its events tagged with their user's slot, so closing
/// it looks nothing up by key (the same shape as hot items' panes hanging
/// off the item). Closing sorts the window by slot first: each user's events
/// are then folded one after another, and its last one is known without a
/// per-user table; users are visited in slab order, which is the order they
/// were allocated in, so mostly in memory order. A window's users (~14 K on
/// the bench, ~1 KB each) do not stay in cache: everything a user needs is
/// done in that one visit.
pub struct ProfileWindows {
    cfg: ProfileConfig,
    counters: Arc<Counters>,
    /// Each user's slot in `slab`.
    users: IdMap<UserKey, usize>,
    /// Cumulative aggregate over closed windows, per user. Boxed: growing
    /// the slab then copies pointers, not ~400-byte users (inline cost 4 %
    /// more cache misses than boxed on the 200 K-event bench).
    #[allow(clippy::vec_box)]
    slab: Vec<Box<User>>,
    /// Window end -> the events of that (still open) window with their
    /// user's slot; they are added to the cumulative profiles when it closes.
    open: BTreeMap<i64, Vec<(usize, OpenEvent)>>,
    /// A closed window's list, emptied: the next window reuses its room.
    spare: Vec<(usize, OpenEvent)>,
    /// A closing window's (slot, index) pairs in slot order; kept for its room.
    order: Vec<(usize, usize)>,
    store: Option<Box<dyn ProfileStore>>,
    /// Slots of the users whose latest document is not sent yet.
    unsent: Vec<usize>,
    /// Close point of the earliest window in `unsent`.
    unsent_since: Option<Minute>,
}

impl ProfileWindows {
    /// Empty state; every user starts from nothing.
    pub fn new(cfg: ProfileConfig, counters: Arc<Counters>) -> Self {
        ProfileWindows {
            cfg,
            counters,
            users: IdMap::default(),
            slab: Vec::new(),
            open: BTreeMap::new(),
            spare: Vec::new(),
            order: Vec::new(),
            store: None,
            unsent: Vec::new(),
            unsent_since: None,
        }
    }

    /// Users seen for the first time start from their document in `store`.
    pub fn with_store(mut self, store: Box<dyn ProfileStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Loads the stored profiles of the users of a closing window not asked
    /// for yet, in one batch; `order` is its (slot, index) pairs, sorted.
    fn load_new_users(&mut self, order: &[(usize, usize)]) {
        let Some(store) = self.store.as_mut() else { return };
        // Each user once: at its first event.
        let keys: Vec<ProfileKey> = order
            .iter()
            .enumerate()
            .filter(|&(k, &(u, _))| (k == 0 || order[k - 1].0 != u) && !self.slab[u].loaded)
            .map(|(_, &(u, _))| {
                let k = &self.slab[u].key;
                (k.tenant.clone(), k.user.clone(), k.scenario.clone())
            })
            .collect();
        if keys.is_empty() {
            return;
        }
        let mut backoff = std::time::Duration::from_millis(100);
        let docs = loop {
            match store.load(&keys) {
                Ok(docs) => break docs,
                Err(e) => {
                    // Without the stored base the profile would be wrong: wait (backpressure).
                    tracing::warn!(error = %e, keys = keys.len(), "loading stored profiles failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                }
            }
        };
        for d in docs {
            let key = UserKey { tenant: d.tenant_id.clone(), user: d.user_id.clone(), scenario: d.scenario_id.clone() };
            // A store answering with a key not asked for is ignored: it has no slot here.
            if let Some(user) = self.users.get(&key).map(|&u| &mut self.slab[u]).filter(|u| !u.loaded) {
                user.total = Agg::from_doc(&d);
                user.stored_until = d.updated_window;
            }
        }
        for &(u, _) in order {
            self.slab[u].loaded = true;
        }
    }
}

/// Builds the document from a cumulative aggregate.
fn document(k: &UserKey, a: &Agg, updated_window: i64, favorites: usize) -> ProfileDoc {
    // `category_weights` is in name order, as the map wants it.
    let cats: Vec<(Str, u64)> = a.category_weights.iter().filter(|(_, w)| *w > 0).cloned().collect();
    let favorite_categories = top_k_ids(&cats, favorites);
    ProfileDoc {
        tenant_id: k.tenant.clone(),
        user_id: k.user.clone(),
        scenario_id: k.scenario.clone(),
        counts: ActionCounts(a.counts),
        watch_count: a.counts[Action::View.index()] + a.counts[Action::Play.index()],
        watch_seconds: a.watch_seconds.get(),
        category_counts: CategoryMap::from_sorted(cats),
        favorite_categories,
        active_hours: a.active_hours,
        first_seen: a.first_seen,
        last_active_at: a.last_active,
        recent_items: a.recent.iter().map(|e| e.2.clone()).collect(),
        updated_window,
    }
}

impl WindowLogic for ProfileWindows {
    type In = ProfRec;
    /// Shared as is by every sink (and held by the embedded store).
    type Out = Arc<ProfileDoc>;

    fn absorb(&mut self, r: ProfRec, close_at: &mut dyn FnMut(Minute)) {
        let ProfRec { tenant_id, user_id, scenario_id, item_id, category, ts, action, event_id, watch_duration } = r;
        let end = window_start(ts, self.cfg.window_ms) + self.cfg.window_ms;
        let key = UserKey { tenant: tenant_id, user: user_id, scenario: scenario_id };
        let slot = match self.users.entry(key) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                self.slab.push(Box::new(User::new(e.key().clone(), self.store.is_none())));
                *e.insert(self.slab.len() - 1)
            }
        };
        let r = OpenEvent { ts, action, item: item_id, category, event_id, watch_duration };
        let spare = &mut self.spare;
        self.open
            .entry(end)
            .or_insert_with(|| {
                close_at((end / MINUTE_MS) as Minute);
                std::mem::take(spare)
            })
            .push((slot, r));
    }

    fn close(&mut self, close: Minute, out: &mut Vec<Arc<ProfileDoc>>) {
        let end = close as i64 * MINUTE_MS;
        let Some(mut window) = self.open.remove(&end) else { return };
        // (slot, index) pairs, sorted: small to sort (the events are ~110
        // bytes), and each user's events stay in arrival order, so each is
        // folded exactly as before (the fold does not depend on it, ties included).
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(window.iter().enumerate().map(|(i, (u, _))| (*u, i)));
        order.sort_unstable();
        self.load_new_users(&order);
        let mut merged = 0;
        for (k, &(u, i)) in order.iter().enumerate() {
            let user = &mut self.slab[u];
            // A replayed window the stored profile already contains adds
            // nothing, and re-sends the stored document.
            let replayed = end <= user.stored_until;
            if !replayed {
                user.total.add(&window[i].1, &self.cfg.weights, self.cfg.recent_items);
            }
            if order.get(k + 1).is_none_or(|(next, _)| *next != u) {
                // The user's last event of the window.
                let updated = if replayed { user.stored_until } else { end };
                merged += u64::from(!replayed);
                if self.cfg.emit_every.is_zero() {
                    // Built now, while the user is still in cache.
                    out.push(Arc::new(document(&user.key, &user.total, updated, self.cfg.favorite_categories)));
                } else {
                    if user.unsent == i64::MIN {
                        self.unsent.push(u);
                    }
                    user.unsent = updated;
                    self.unsent_since.get_or_insert(close);
                }
            }
        }
        self.order = order;
        window.clear();
        self.counters.profile_windows.fetch_add(merged, Relaxed);
        if window.capacity() > self.spare.capacity() {
            self.spare = window;
        }
    }

    fn deferred(&self) -> Option<Minute> {
        self.unsent_since
    }

    /// At most [`FLUSH_CHUNK`] documents per call: the store then replaces
    /// them before the next part is built (one batch of every held user at
    /// once cost ~60 MiB of peak memory on the bench).
    fn flush_deferred(&mut self, out: &mut Vec<Arc<ProfileDoc>>) {
        // Users in slab order, so mostly in memory order (sorted already from
        // the second part of a flush on).
        self.unsent.sort_unstable();
        let from = self.unsent.len().saturating_sub(FLUSH_CHUNK);
        for u in self.unsent.drain(from..) {
            let user = &mut self.slab[u];
            out.push(Arc::new(document(&user.key, &user.total, user.unsent, self.cfg.favorite_categories)));
            user.unsent = i64::MIN;
        }
        if self.unsent.is_empty() {
            self.unsent_since = None;
        }
    }

    fn defer_for(&self) -> Duration {
        self.cfg.emit_every
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

    /// Every window's documents sent when it closes.
    fn per_window() -> ProfileConfig {
        ProfileConfig { emit_every: Duration::ZERO, ..ProfileConfig::default() }
    }

    fn run(recs: Vec<ProfRec>) -> Vec<Arc<ProfileDoc>> {
        let mut p = ProfileWindows::new(per_window(), Arc::new(Counters::new(1)));
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

    /// A store holding fixed documents.
    struct Stored(Vec<ProfileDoc>);

    impl ProfileStore for Stored {
        fn load(&mut self, keys: &[ProfileKey]) -> Result<Vec<ProfileDoc>, String> {
            Ok(self
                .0
                .iter()
                .filter(|d| keys.contains(&(d.tenant_id.clone(), d.user_id.clone(), d.scenario_id.clone())))
                .cloned()
                .collect())
        }
    }

    #[test]
    fn a_restart_resumes_from_the_stored_profile_without_counting_twice() {
        let m = 60_000;
        let mut events = Vec::new();
        // Three windows; 25 items so the recent list overflows, some items repeat.
        for i in 0..25i64 {
            events.push(rec(&format!("x{}", i % 22), Action::Play, i * 30_000, &format!("e{i:03}")));
        }
        events.push(rec("n7", Action::Impression, 11 * m, "e900"));
        events.push(rec("x3", Action::Like, 14 * m, "e901"));
        let uninterrupted = run(events.clone());
        let (w2, w3) = (&uninterrupted[1], &uninterrupted[2]);
        assert_eq!((w2.updated_window, w3.updated_window), (10 * m, 15 * m));
        // Crash after window 2 was stored; the replay starts inside window 2.
        let replay: Vec<ProfRec> = events.into_iter().filter(|r| r.ts >= 7 * m).collect();
        let mut p = ProfileWindows::new(per_window(), Arc::new(Counters::new(1)))
            .with_store(Box::new(Stored(vec![ProfileDoc::clone(w2)])));
        let mut closes = std::collections::BTreeSet::new();
        for r in replay {
            p.absorb(r, &mut |c| {
                closes.insert(c);
            });
        }
        let mut out = Vec::new();
        for c in closes {
            p.close(c, &mut out);
        }
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0], w2, "the partial replay of window 2 re-sends the stored profile");
        assert_eq!(&out[1], w3, "window 3 on the stored base equals the uninterrupted run");
    }

    /// A store that records every key it is asked for.
    struct Counting(Vec<ProfileDoc>, Arc<std::sync::Mutex<Vec<ProfileKey>>>);

    impl ProfileStore for Counting {
        fn load(&mut self, keys: &[ProfileKey]) -> Result<Vec<ProfileDoc>, String> {
            self.1.lock().unwrap().extend_from_slice(keys);
            Stored(self.0.clone()).load(keys)
        }
    }

    #[test]
    fn a_user_open_in_two_windows_is_loaded_once_and_built_on_its_stored_base() {
        let m = 60_000;
        // Stored: 5 clicks on "tech", up to window end 5 min.
        let mut base = ProfileDoc::clone(&run(vec![rec("x0", Action::Click, m, "e0")])[0]);
        base.counts.0[Action::Click.index()] = 5;
        base.category_counts = CategoryMap::from_sorted(vec![("tech".into(), 10)]);
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut p = ProfileWindows::new(per_window(), Arc::new(Counters::new(1)))
            .with_store(Box::new(Counting(vec![base], asked.clone())));
        // Windows ending at 10 and 15 min are both open before either closes;
        // a second user ("v") has nothing stored.
        let mut closes = std::collections::BTreeSet::new();
        let mut v = rec("n1", Action::Like, 6 * m, "e3");
        v.user_id = "v".into();
        for r in [rec("x1", Action::Click, 6 * m, "e1"), rec("x2", Action::Click, 11 * m, "e2"), v] {
            p.absorb(r, &mut |c| {
                closes.insert(c);
            });
        }
        let mut out = Vec::new();
        for c in closes {
            p.close(c, &mut out);
        }
        let u: Vec<_> = out.iter().filter(|d| d.user_id == "u").collect();
        assert_eq!(u.len(), 2);
        // 5 stored + 1, then + 1 more; click weight 2 on "tech": 10 + 2, + 2.
        assert_eq!((u[0].counts["click"], u[0].category_counts.get("tech")), (6, Some(&12)));
        assert_eq!((u[1].counts["click"], u[1].category_counts.get("tech")), (7, Some(&14)));
        let v: Vec<_> = out.iter().filter(|d| d.user_id == "v").collect();
        assert_eq!((v.len(), v[0].counts["like"], v[0].counts["click"]), (1, 1, 0));
        let mut asked = asked.lock().unwrap().clone();
        asked.sort();
        let key = |u: &str| (Str::from("t"), Str::from(u), Str::from("s"));
        assert_eq!(asked, vec![key("u"), key("v")], "each user asked for once");
    }

    #[test]
    fn coalesced_documents_are_each_users_latest_and_held_until_flushed() {
        let m = 60_000;
        let mut events = Vec::new();
        // u: windows ending 5, 10 and 15 min; v: only the first; w: only the second.
        for (i, (user, t)) in [("u", 1), ("u", 6), ("u", 12), ("v", 2), ("w", 7), ("u", 13)].into_iter().enumerate() {
            let mut r = rec(&format!("x{i}"), Action::Click, t * m, &format!("e{i}"));
            r.user_id = user.into();
            events.push(r);
        }
        let every = run(events.clone());
        assert_eq!(every.len(), 5, "per window: u three times, v and w once");
        let mut p = ProfileWindows::new(ProfileConfig::default(), Arc::new(Counters::new(1)));
        assert_eq!(p.defer_for(), Duration::from_secs(1));
        let mut closes = std::collections::BTreeSet::new();
        for r in events {
            p.absorb(r, &mut |c| {
                closes.insert(c);
            });
        }
        let mut out = Vec::new();
        let first = *closes.first().unwrap();
        for c in closes {
            p.close(c, &mut out);
        }
        assert!(out.is_empty(), "closing only marks the users");
        assert_eq!(p.deferred(), Some(first), "time is kept for the earliest window held back");
        p.flush_deferred(&mut out);
        assert_eq!(p.deferred(), None);
        // The reference: the last per-window document of each user.
        let mut latest = std::collections::BTreeMap::new();
        for d in &every {
            latest.insert(d.user_id.clone(), d.clone());
        }
        let mut got: Vec<_> = out.iter().map(|d| (d.user_id.clone(), d.clone())).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, latest.into_iter().collect::<Vec<_>>());
        assert_eq!(got[0].1.counts["click"], 4, "u's document holds all four windows' clicks");
        assert_eq!(got[0].1.updated_window, 15 * m);
        // Nothing is sent twice: a second flush without new windows is empty.
        out.clear();
        p.flush_deferred(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_large_flush_comes_in_parts_each_user_once() {
        let users = 2 * FLUSH_CHUNK + 5;
        let mut p = ProfileWindows::new(ProfileConfig::default(), Arc::new(Counters::new(1)));
        let mut closes = std::collections::BTreeSet::new();
        for i in 0..users {
            for t in [1_000, 301_000] {
                let mut r = rec("x", Action::Click, t, &format!("e{i}-{t}"));
                r.user_id = format!("u{i}").into();
                p.absorb(r, &mut |c| {
                    closes.insert(c);
                });
            }
        }
        let mut out = Vec::new();
        for c in closes {
            p.close(c, &mut out);
        }
        let mut parts = Vec::new();
        while p.deferred().is_some() {
            let before = out.len();
            p.flush_deferred(&mut out);
            parts.push(out.len() - before);
            assert!(parts.len() <= 3, "no progress");
        }
        assert_eq!(parts, vec![FLUSH_CHUNK, FLUSH_CHUNK, 5]);
        let distinct: std::collections::HashSet<_> = out.iter().map(|d| d.user_id.clone()).collect();
        assert_eq!(distinct.len(), users, "every user once");
        assert!(out.iter().all(|d| d.counts["click"] == 2 && d.updated_window == 600_000));
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
        assert!((d.category_score("news").unwrap() - 11.0 / 15.0).abs() < 1e-15);
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
