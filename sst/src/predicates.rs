//! Predicates: (condition, trigger) pairs evaluated over the local copy of the table.
//!
//! Three kinds ([`PredicateKind`]):
//!
//! * **one-time**: the trigger runs the first time the condition holds, then the predicate is
//!   removed;
//! * **recurrent**: the trigger runs at every evaluation where the condition holds;
//! * **transition**: the trigger runs when the condition goes from false to true (it starts as
//!   false, so a condition already true at insertion fires at the first evaluation).
//!
//! [`Sst::step`] evaluates every registered predicate once, in insertion order, and returns how
//! many triggers ran. Conditions and triggers are called **without any lock held**, with the
//! table as argument, so a trigger may push, insert new predicates, or remove any predicate,
//! itself included:
//!
//! * a predicate inserted during a step is first evaluated in the next step;
//! * a predicate removed during a step is not evaluated afterwards in that step (if it is the
//!   one running, it is dropped when its trigger returns).
//!
//! Conditions and triggers receive the table as an argument: do not capture an `Arc<Sst>` in
//! them, it would form a reference cycle that keeps the table (and its regions) alive.
//!
//! Steps are serialised: a call to [`Sst::step`] while another is running (on another thread, or
//! from inside a trigger) returns 0 at once. A recurrent predicate that stays true keeps the core
//! loop busy, so write conditions that are false when there is nothing to do.

use std::collections::BTreeMap;
use std::sync::Mutex;

use derecho_fabric::sync::lock;

use crate::error::SstError;
use crate::table::Sst;

/// A condition over the table.
pub type Condition = Box<dyn FnMut(&Sst) -> bool + Send>;

/// What runs when a condition fires.
pub type Trigger = Box<dyn FnMut(&Sst) + Send>;

/// When a predicate's trigger runs; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PredicateKind {
    /// Once, the first time the condition holds; then the predicate is removed.
    OneTime,
    /// Every evaluation where the condition holds.
    Recurrent,
    /// Every time the condition goes from false to true.
    Transition,
}

/// Names a registered predicate, for [`Predicates::remove`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PredicateHandle(u64);

struct Body {
    condition: Condition,
    trigger: Trigger,
    last: bool,
}

struct Entry {
    kind: PredicateKind,
    /// `None` while the evaluator has taken it out to run it.
    body: Option<Body>,
    /// Removed while it was running: drop it when it comes back.
    removed: bool,
}

#[derive(Default)]
struct State {
    next: u64,
    entries: BTreeMap<u64, Entry>,
}

/// The predicates of one table. Reached through [`Sst::predicates`].
pub struct Predicates {
    state: Mutex<State>,
    /// Held for the duration of a step; holds the scratch list of ids to evaluate.
    stepping: Mutex<Vec<u64>>,
    limit: usize,
}

impl std::fmt::Debug for Predicates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predicates")
            .field("registered", &self.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl Predicates {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            stepping: Mutex::new(Vec::new()),
            limit,
        }
    }

    /// Registers a predicate. Fails if the configured bound is reached.
    pub fn insert(
        &self,
        kind: PredicateKind,
        condition: impl FnMut(&Sst) -> bool + Send + 'static,
        trigger: impl FnMut(&Sst) + Send + 'static,
    ) -> Result<PredicateHandle, SstError> {
        let mut s = lock(&self.state);
        if s.entries.len() >= self.limit {
            return Err(SstError::TooManyPredicates { limit: self.limit });
        }
        s.next += 1;
        let id = s.next;
        s.entries.insert(
            id,
            Entry {
                kind,
                body: Some(Body {
                    condition: Box::new(condition),
                    trigger: Box::new(trigger),
                    last: false,
                }),
                removed: false,
            },
        );
        Ok(PredicateHandle(id))
    }

    /// Registers a one-time predicate.
    pub fn one_time(
        &self,
        condition: impl FnMut(&Sst) -> bool + Send + 'static,
        trigger: impl FnMut(&Sst) + Send + 'static,
    ) -> Result<PredicateHandle, SstError> {
        self.insert(PredicateKind::OneTime, condition, trigger)
    }

    /// Registers a recurrent predicate.
    pub fn recurrent(
        &self,
        condition: impl FnMut(&Sst) -> bool + Send + 'static,
        trigger: impl FnMut(&Sst) + Send + 'static,
    ) -> Result<PredicateHandle, SstError> {
        self.insert(PredicateKind::Recurrent, condition, trigger)
    }

    /// Registers a transition predicate.
    pub fn transition(
        &self,
        condition: impl FnMut(&Sst) -> bool + Send + 'static,
        trigger: impl FnMut(&Sst) + Send + 'static,
    ) -> Result<PredicateHandle, SstError> {
        self.insert(PredicateKind::Transition, condition, trigger)
    }

    /// Removes a predicate. Returns false if it was already gone (removed, or a one-time
    /// predicate that fired).
    pub fn remove(&self, handle: PredicateHandle) -> bool {
        let mut s = lock(&self.state);
        match s.entries.get_mut(&handle.0) {
            None => false,
            Some(e) if e.body.is_none() => !std::mem::replace(&mut e.removed, true),
            Some(_) => {
                s.entries.remove(&handle.0);
                true
            }
        }
    }

    /// Whether the predicate is still registered.
    pub fn contains(&self, handle: PredicateHandle) -> bool {
        lock(&self.state)
            .entries
            .get(&handle.0)
            .is_some_and(|e| !e.removed)
    }

    /// Removes every predicate.
    pub fn clear(&self) {
        let mut s = lock(&self.state);
        s.entries.retain(|_, e| {
            e.removed = true;
            e.body.is_none()
        });
    }

    /// Number of registered predicates.
    pub fn len(&self) -> usize {
        lock(&self.state)
            .entries
            .values()
            .filter(|e| !e.removed)
            .count()
    }

    /// Whether no predicate is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One evaluation round; see the module docs.
    pub(crate) fn evaluate(&self, sst: &Sst) -> usize {
        let mut ids = match self.stepping.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return 0,
        };
        ids.clear();
        ids.extend(lock(&self.state).entries.keys().copied());
        let mut fired = 0;
        for &id in ids.iter() {
            let taken = {
                let mut s = lock(&self.state);
                match s.entries.get_mut(&id) {
                    Some(e) if !e.removed => e.body.take().map(|b| (e.kind, b)),
                    _ => None,
                }
            };
            let Some((kind, mut body)) = taken else {
                continue;
            };
            let now = (body.condition)(sst);
            let fire = match kind {
                PredicateKind::Transition => now && !body.last,
                PredicateKind::OneTime | PredicateKind::Recurrent => now,
            };
            body.last = now;
            if fire {
                (body.trigger)(sst);
                fired += 1;
            }
            let mut s = lock(&self.state);
            if let Some(e) = s.entries.get_mut(&id) {
                if e.removed || (fire && kind == PredicateKind::OneTime) {
                    s.entries.remove(&id);
                } else {
                    e.body = Some(body);
                }
            }
        }
        fired
    }
}
