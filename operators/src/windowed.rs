//! One generic event-time window operator. Each job supplies a
//! [`WindowLogic`]: how to fold a record and what to emit when a close point
//! is complete. The operator owns the timely side: it holds a capability
//! only while results are pending, and fires close points in order once the
//! input frontier has passed them, so closing is driven by timely progress
//! (the watermark), never by wall-clock or arrival order.

use std::collections::BTreeSet;

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
    /// All input before `close` has arrived: push the results for it.
    fn close(&mut self, close: Minute, out: &mut Vec<Self::Out>);
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
    stream.unary_frontier(pact, name, move |_cap, _info| {
        let mut held: Option<Capability<Minute>> = None;
        let mut pending: BTreeSet<Minute> = BTreeSet::new();
        let mut out: Vec<L::Out> = Vec::new();
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
            while let Some(&m) = pending.first() {
                // Complete when no time < m can still arrive.
                if m > 0 && frontier.less_equal(&(m - 1)) {
                    break;
                }
                pending.pop_first();
                logic.close(m, &mut out);
                if !out.is_empty() {
                    if let Some(h) = held.as_ref() {
                        let at = h.delayed(&(m.saturating_sub(1)).max(*h.time()));
                        output.session(&at).give_iterator(out.drain(..));
                    } else {
                        out.clear();
                    }
                }
            }
            match pending.first() {
                None => held = None,
                Some(&m) => {
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
