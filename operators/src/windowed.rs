//! One generic event-time window operator. Each job supplies a
//! [`WindowLogic`]: how to fold a record and what to emit when a close point
//! is complete. The operator owns the timely side: it holds a capability
//! only while results are pending, and fires close points in order once the
//! input frontier has passed them, so closing is driven by timely progress
//! (the watermark), never by wall-clock or arrival order.
//!
//! A logic may also hold results back after a close and send only the
//! latest per key at most every [`WindowLogic::defer_for`] (as Kafka
//! Streams' record cache does): while it holds any, the operator keeps a
//! capability at their earliest close point, so nothing downstream (the
//! sinks' acknowledgements, hence the committed offsets) passes them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Stream, StreamVec};

use crate::Minute;

/// Job-specific state of a windowed operator.
pub trait WindowLogic: 'static {
    /// Input record.
    type In: 'static;
    /// Output record.
    type Out: Clone + 'static;
    /// Folds one record; calls `close_at(m)` for every close point `m` the
    /// record makes pending (the output for `m` needs all input < `m`).
    fn absorb(&mut self, rec: Self::In, close_at: &mut dyn FnMut(Minute));
    /// All input before `close` has arrived: push the results for it (or
    /// hold them back, see [`WindowLogic::deferred`]).
    fn close(&mut self, close: Minute, out: &mut Vec<Self::Out>);
    /// The earliest close point whose results `close` held back, if any.
    fn deferred(&self) -> Option<Minute> {
        None
    }
    /// Pushes held-back results: all, or a part when they are many (then
    /// [`WindowLogic::deferred`] still answers and the operator comes back
    /// for the rest at once, after the sinks took this part).
    fn flush_deferred(&mut self, _out: &mut Vec<Self::Out>) {}
    /// How long held-back results may wait, at most (from the last flush).
    fn defer_for(&self) -> Duration {
        Duration::ZERO
    }
}

/// Applies `logic` to `stream` partitioned by `pact`; results for close
/// point `m` are emitted at time `m - 1`.
pub fn windowed<'s, L, P>(
    stream: StreamVec<'s, Minute, L::In>,
    pact: P,
    name: &str,
    mut logic: L,
) -> StreamVec<'s, Minute, L::Out>
where
    L: WindowLogic,
    P: ParallelizationContract<Minute, Vec<L::In>>,
    Stream<'s, Minute, Vec<L::In>>: Operator<'s, Minute, Vec<L::In>>,
{
    let scope = stream.scope();
    stream.unary_frontier(pact, name, move |_cap, info| {
        let activator = scope.activator_for(info.address);
        let mut held: Option<Capability<Minute>> = None;
        let mut pending: BTreeSet<Minute> = BTreeSet::new();
        let mut out: Vec<L::Out> = Vec::new();
        let mut flushed_at = Instant::now();
        // A flush handed out only part of the held-back results.
        let mut flushing = false;
        // The pending wake-up: one timer at a time, not one per activation.
        let mut wake_at: Option<Instant> = None;
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                if let Some(t) = cap.least().copied() {
                    if held.as_ref().is_none_or(|h| t < *h.time()) {
                        held = cap.retain_least(output.output_index());
                    }
                }
                for batch in data {
                    for rec in batch.drain(..) {
                        logic.absorb(rec, &mut |m| {
                            pending.insert(m);
                        });
                    }
                }
            });
            // Results of close point `m` go out at `m - 1` (never before the held capability).
            let mut send = |m: Minute, out: &mut Vec<L::Out>| {
                if let (Some(h), false) = (held.as_ref(), out.is_empty()) {
                    let at = h.delayed(&(m.saturating_sub(1)).max(*h.time()));
                    output.session(&at).give_iterator(out.drain(..));
                }
                out.clear();
            };
            while let Some(&m) = pending.first() {
                // Complete when no time < m can still arrive.
                if m > 0 && frontier.less_equal(&(m - 1)) {
                    break;
                }
                pending.pop_first();
                logic.close(m, &mut out);
                send(m, &mut out);
            }
            if let Some(d) = logic.deferred() {
                let wait = logic.defer_for().saturating_sub(flushed_at.elapsed());
                if wait.is_zero() || frontier.is_empty() || flushing {
                    flushed_at = Instant::now();
                    logic.flush_deferred(&mut out);
                    send(d, &mut out);
                    flushing = logic.deferred().is_some();
                    if flushing {
                        activator.activate();
                    }
                } else if wake_at.is_none_or(|w| w <= Instant::now()) {
                    activator.activate_after(wait);
                    wake_at = Some(Instant::now() + wait);
                }
            }
            // Keep time for the earliest pending close and held-back result.
            match pending.first().copied().into_iter().chain(logic.deferred()).min() {
                None => held = None,
                Some(m) => {
                    if let Some(h) = held.as_mut() {
                        let t = m.saturating_sub(1);
                        if t > *h.time() {
                            h.downgrade(&t);
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::{Inspect, Probe};
    use timely::dataflow::{InputHandle, ProbeHandle};

    use super::*;

    /// Per key, the latest close point it had data in; held back and sent on flush.
    #[derive(Default)]
    struct Latest {
        open: BTreeMap<Minute, Vec<char>>,
        unsent: BTreeMap<char, Minute>,
        since: Option<Minute>,
    }

    impl WindowLogic for Latest {
        type In = (Minute, char);
        type Out = (char, Minute);
        fn absorb(&mut self, (t, key): (Minute, char), close_at: &mut dyn FnMut(Minute)) {
            self.open.entry(t + 1).or_default().push(key);
            close_at(t + 1);
        }
        fn close(&mut self, close: Minute, _out: &mut Vec<(char, Minute)>) {
            for key in self.open.remove(&close).unwrap_or_default() {
                self.unsent.insert(key, close);
            }
            self.since.get_or_insert(close);
        }
        fn deferred(&self) -> Option<Minute> {
            self.since
        }
        /// One result per call: the operator must come back for the rest.
        fn flush_deferred(&mut self, out: &mut Vec<(char, Minute)>) {
            out.extend(self.unsent.pop_first());
            if self.unsent.is_empty() {
                self.since = None;
            }
        }
        fn defer_for(&self) -> Duration {
            Duration::from_millis(300)
        }
    }

    #[test]
    fn held_back_results_keep_time_until_flushed_then_go_out_coalesced() {
        timely::execute_directly(|worker| {
            let mut input = InputHandle::new();
            let probe = ProbeHandle::new();
            let got: Rc<RefCell<Vec<(char, Minute)>>> = Rc::default();
            let g = got.clone();
            worker.dataflow::<Minute, _, _>(|scope| {
                let s = input.to_stream(scope).container::<Vec<(Minute, char)>>();
                windowed(s, Pipeline, "Latest", Latest::default())
                    .inspect(move |x: &(char, Minute)| g.borrow_mut().push(*x))
                    .probe_with(&probe);
            });
            let started = Instant::now();
            for t in 0..4 {
                input.send((t, 'a'));
                if t % 2 == 0 {
                    input.send((t, 'b'));
                }
                input.advance_to(t + 1);
            }
            // Every window closed (the input is at 4); nothing was sent yet,
            // and time is kept at the first window's (close 1 -> time 0).
            for _ in 0..50 {
                worker.step();
            }
            if started.elapsed() < Duration::from_millis(250) {
                assert!(got.borrow().is_empty(), "sent before the interval: {:?}", got.borrow());
                assert!(probe.less_equal(&0), "the held-back results must hold the frontier");
            }
            // After the interval, with no new input, the operator wakes itself.
            while probe.less_than(&4) {
                worker.step_or_park(Some(Duration::from_millis(10)));
                assert!(started.elapsed() < Duration::from_secs(10), "never flushed");
            }
            assert!(started.elapsed() >= Duration::from_millis(300));
            let mut sent = got.borrow().clone();
            sent.sort();
            assert_eq!(sent, vec![('a', 4), ('b', 3)], "one result per key, its latest");
        });
    }
}
