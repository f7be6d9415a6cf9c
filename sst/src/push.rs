//! Pushes: copying a byte range of my row into the same place of my row in peers' tables.
//!
//! A push is one one-sided write per target, at the same offset in source and destination
//! ([`derecho_fabric::WriteRequest::mirrored`]). Targets are every member or a chosen list of
//! ranks; my own rank and frozen rows are always skipped, so a frozen row is never written
//! again. A target whose link has failed is frozen and reported (see [`crate::failure`]); that is
//! not an error of the push. Every push also rings this node's doorbell, so a parked core loop
//! re-evaluates predicates that read my row.
//!
//! Plain pushes return once the writes are handed to the fabric. [`Sst::push_with_completion`]
//! waits until every target applied the write (or the timeout passed); targets that did not are
//! frozen and reported, and returned.

use std::time::{Duration, Instant};

use derecho_fabric::{Completion, FabricError, WriteRequest};

use crate::error::SstError;
use crate::schema::{ArrayField, BytesField, RowRange};
use crate::table::Sst;

/// Which rows a push goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets<'a> {
    /// Every member (except me and frozen rows).
    All,
    /// These ranks (except me and frozen rows).
    Ranks(&'a [usize]),
}

impl Sst {
    /// Pushes `what` (a field, an array, a byte area or a [`RowRange`]) to every member.
    pub fn push(&self, what: impl Into<RowRange>) -> Result<(), SstError> {
        self.push_range(what.into(), Targets::All)
    }

    /// Pushes `what` to the given ranks.
    pub fn push_to(&self, what: impl Into<RowRange>, ranks: &[usize]) -> Result<(), SstError> {
        self.push_range(what.into(), Targets::Ranks(ranks))
    }

    /// Pushes my whole row to every member.
    pub fn push_row(&self) -> Result<(), SstError> {
        self.push_range(self.schema.row_range(), Targets::All)
    }

    /// Pushes element `i` of `array` to every member.
    pub fn push_elem<T>(&self, array: ArrayField<T>, i: usize) -> Result<(), SstError> {
        let range = array.elems_range(i, 1).ok_or(SstError::OutOfRange {
            offset: i,
            len: 1,
            limit: array.len(),
        })?;
        self.push_range(range, Targets::All)
    }

    /// Pushes bytes `[at, at + len)` of byte area `area` to every member.
    pub fn push_bytes(&self, area: BytesField, at: usize, len: usize) -> Result<(), SstError> {
        let range = area.sub_range(at, len).ok_or(SstError::OutOfRange {
            offset: at,
            len,
            limit: area.len(),
        })?;
        self.push_range(range, Targets::All)
    }

    /// Pushes `range` of my row to `targets`. Returns once every write is posted. Targets whose
    /// link has failed are frozen and reported.
    pub fn push_range(&self, range: RowRange, targets: Targets<'_>) -> Result<(), SstError> {
        self.check_push(range, targets)?;
        let offset = self.my_rank * self.row_len + range.offset;
        let mut first_error = None;
        self.for_each_target(targets, |rank| {
            let Some(peer) = self.peer(rank) else {
                return;
            };
            let req = WriteRequest::mirrored(&self.table, &peer.table, offset, range.len);
            if let Err(e) = peer.link.write(&req) {
                self.write_failed(rank, e, &mut first_error);
            }
        });
        self.doorbell.ring();
        first_error.map_or(Ok(()), Err)
    }

    /// Pushes `range` of my row to `targets` with signaled writes and waits until all of them
    /// are applied remotely, at most `timeout` in all. Returns the ranks that failed (error or
    /// no completion in time); they are frozen and reported through the failure upcall.
    pub fn push_with_completion(
        &self,
        range: impl Into<RowRange>,
        targets: Targets<'_>,
        timeout: Duration,
    ) -> Result<Vec<usize>, SstError> {
        let range = range.into();
        self.check_push(range, targets)?;
        let offset = self.my_rank * self.row_len + range.offset;
        let deadline = Instant::now() + timeout;
        let mut failed = Vec::new();
        let mut first_error = None;
        let mut pending: Vec<(usize, Completion)> = Vec::new();
        self.for_each_target(targets, |rank| {
            let Some(peer) = self.peer(rank) else {
                return;
            };
            let req = WriteRequest::mirrored(&self.table, &peer.table, offset, range.len);
            match peer.link.write_signaled(&req) {
                Ok(c) => pending.push((rank, c)),
                Err(e) => {
                    if e.is_link_failure() {
                        failed.push(rank);
                    }
                    self.write_failed(rank, e, &mut first_error);
                }
            }
        });
        self.doorbell.ring();
        for (rank, completion) in pending {
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = match completion.poll() {
                Some(r) => r,
                None => completion.wait(left),
            };
            match outcome {
                Ok(()) => {}
                Err(FabricError::Timeout { .. }) => {
                    failed.push(rank);
                    let reason = format!("no write completion within {timeout:?}");
                    self.freeze(rank, &reason);
                }
                Err(e) => {
                    failed.push(rank);
                    self.freeze(rank, &e.to_string());
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(failed),
        }
    }

    /// Checks the range and the target ranks of a push.
    fn check_push(&self, range: RowRange, targets: Targets<'_>) -> Result<(), SstError> {
        match range.offset.checked_add(range.len) {
            Some(end) if end <= self.row_len => {}
            _ => {
                return Err(SstError::OutOfRange {
                    offset: range.offset,
                    len: range.len,
                    limit: self.row_len,
                })
            }
        }
        if !self.is_connected() {
            return Err(SstError::NotConnected);
        }
        let n = self.members.len();
        if let Targets::Ranks(ranks) = targets {
            if let Some(bad) = ranks.iter().find(|r| **r >= n) {
                return Err(SstError::BadRank {
                    rank: *bad,
                    members: n,
                });
            }
        }
        Ok(())
    }

    /// Calls `f` for every live target rank (not me, not frozen), in the order given.
    fn for_each_target(&self, targets: Targets<'_>, mut f: impl FnMut(usize)) {
        let mut visit = |r: usize| {
            if r != self.my_rank && !self.is_frozen(r) {
                f(r);
            }
        };
        match targets {
            Targets::All => (0..self.members.len()).for_each(&mut visit),
            Targets::Ranks(ranks) => ranks.iter().copied().for_each(&mut visit),
        }
    }

    /// Handles a write that could not be posted: a failed link freezes the row; anything else
    /// is kept as the push's error.
    fn write_failed(&self, rank: usize, e: FabricError, first_error: &mut Option<SstError>) {
        if e.is_link_failure() {
            self.freeze(rank, &e.to_string());
        } else {
            tracing::warn!(rank, error = %e, "sst push failed");
            if first_error.is_none() {
                *first_error = Some(e.into());
            }
        }
    }
}
