//! Every transaction's and dialog's next deadline in one ordered queue, so that the next wake-up
//! ([`Deadlines::next`]) and the owners due at a time ([`Deadlines::pop_due`]) cost O(log n),
//! not a visit of every transaction and dialog (the cost of a call grew 100-fold from 100 to
//! 50,000 calls up when the endpoint scanned them all on each driver loop).
//!
//! The endpoint keeps one entry per owner: after it changes an owner's timers it calls
//! [`Deadlines::arm`] with the owner's new next deadline (or `None`). A due owner is handed back
//! once, and re-armed by the endpoint after it has run that owner's timers.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::{CallKey, TxnKey};

/// Whose deadline an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Owner {
    /// An INVITE server transaction.
    Invite(TxnKey),
    /// A non-INVITE server transaction (Timer J).
    NonInvite(TxnKey),
    /// One of our client transactions, by branch.
    Client(String),
    /// A dialog: its unacknowledged 2xx, session timer and OPTIONS ping.
    Dialog(CallKey),
}

/// The queue: deadlines in order, and where each owner's entry is.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    /// (deadline, tie-breaker) to owner.
    queue: BTreeMap<(Instant, u64), Owner>,
    /// Each owner's entry in `queue`.
    entries: HashMap<Owner, (Instant, u64)>,
    next_tie: u64,
}

impl Deadlines {
    /// Sets `owner`'s next deadline (`None`: it has none, or is gone).
    pub(super) fn arm(&mut self, owner: Owner, at: Option<Instant>) {
        match (self.entries.get(&owner).copied(), at) {
            (Some((queued, _)), Some(at)) if queued == at => {}
            (old, at) => {
                if let Some(entry) = old {
                    self.queue.remove(&entry);
                    self.entries.remove(&owner);
                }
                if let Some(at) = at {
                    self.next_tie += 1;
                    let entry = (at, self.next_tie);
                    self.queue.insert(entry, owner.clone());
                    self.entries.insert(owner, entry);
                }
            }
        }
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    /// Takes the owners whose deadline is at or before `now`, earliest first; each is out of
    /// the queue until armed again.
    pub(super) fn pop_due(&mut self, now: Instant) -> Vec<Owner> {
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let owner = entry.remove();
            self.entries.remove(&owner);
            due.push(owner);
        }
        due
    }

    /// The deadline armed for `owner`, if any (for the endpoint's consistency check).
    pub(super) fn armed(&self, owner: &Owner) -> Option<Instant> {
        self.entries.get(owner).map(|(at, _)| *at)
    }

    /// How many owners are armed.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn owners_come_due_in_order_once_and_rearm_in_place() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut deadlines = Deadlines::default();
        deadlines.arm(Owner::Dialog(CallKey(1)), Some(at(30)));
        deadlines.arm(Owner::Client("b".into()), Some(at(10)));
        deadlines.arm(Owner::Dialog(CallKey(2)), Some(at(20)));
        assert_eq!(deadlines.next(), Some(at(10)));
        // Moving an owner later or earlier keeps one entry for it.
        deadlines.arm(Owner::Client("b".into()), Some(at(40)));
        deadlines.arm(Owner::Dialog(CallKey(1)), Some(at(5)));
        assert_eq!(deadlines.len(), 3);
        assert_eq!(deadlines.next(), Some(at(5)));
        // A disarmed owner is gone from the queue.
        deadlines.arm(Owner::Dialog(CallKey(2)), None);
        assert_eq!(
            deadlines.pop_due(at(40)),
            [Owner::Dialog(CallKey(1)), Owner::Client("b".into())]
        );
        assert_eq!(deadlines.pop_due(at(100)), []);
        assert_eq!((deadlines.next(), deadlines.len()), (None, 0));
    }
}
