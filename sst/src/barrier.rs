//! A bounded barrier among the live members of a table.
//!
//! The original system ran this barrier over a separate TCP "side channel" socket per pair of
//! nodes (the one it also used to exchange RDMA keys). Here **the fabric link is the side
//! channel**: region names are looked up over it, and the barrier is a one-sided write over it.
//! Each table owns a small barrier region ([`Sst::barrier_region_id`]) with one word per member.
//! To enter barrier number `e`, a member writes `e` into its own slot of every live peer's
//! barrier region, then waits (parked on the table's doorbell) until every live member's slot in
//! its own barrier region reached `e`, or the timeout passed. Slots only grow, so a member that
//! is already at a later barrier counts as arrived.
//!
//! The barrier has two halves for single-threaded drivers such as the sim backend:
//! [`Sst::barrier_enter`] writes, [`Sst::barrier_missing`] tells who has not arrived yet.
//! [`Sst::sync_with_members`] does both and waits.

use std::time::{Duration, Instant};

use derecho_fabric::sync::lock;
use derecho_fabric::{NodeId, WriteRequest};

use crate::error::SstError;
use crate::schema::WORD;
use crate::table::Sst;

/// A barrier this node has entered, for [`Sst::barrier_missing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierTicket {
    epoch: u64,
}

impl BarrierTicket {
    /// The barrier's number (1 for the first barrier of a table).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Sst {
    /// Enters the next barrier: announces it to every live member and returns its ticket.
    /// Members whose link has failed are frozen and reported.
    pub fn barrier_enter(&self) -> Result<BarrierTicket, SstError> {
        if !self.is_connected() {
            return Err(SstError::NotConnected);
        }
        let slot = self.my_rank * WORD;
        let epoch = {
            let mut e = lock(&self.barrier_epoch);
            *e += 1;
            // Rule: barrier slots only grow, and only this node writes its own slot here (under
            // this lock, so two callers cannot store out of order).
            assert!(
                self.barrier.load_u64(slot) < *e,
                "barrier {} entered twice",
                *e
            );
            self.barrier.store_u64(slot, *e);
            *e
        };
        for rank in 0..self.members.len() {
            if rank == self.my_rank || self.is_frozen(rank) {
                continue;
            }
            let Some(peer) = self.peer(rank) else {
                continue;
            };
            let req = WriteRequest::mirrored(&self.barrier, &peer.barrier, slot, WORD);
            if let Err(e) = peer.link.write(&req) {
                if e.is_link_failure() {
                    self.freeze(rank, &e.to_string());
                } else {
                    return Err(e.into());
                }
            }
        }
        Ok(BarrierTicket { epoch })
    }

    /// The members that have not reached the barrier of `ticket` yet: live members whose slot
    /// is behind, and frozen members (they will not arrive). Empty when the barrier is passed.
    pub fn barrier_missing(&self, ticket: &BarrierTicket) -> Vec<NodeId> {
        self.barrier_missing_inner(ticket, true)
    }

    /// The live members that have not reached the barrier of `ticket` yet: like
    /// [`Sst::barrier_missing`] without the frozen members, which are not waited for.
    pub fn barrier_waiting(&self, ticket: &BarrierTicket) -> Vec<NodeId> {
        self.barrier_missing_inner(ticket, false)
    }

    fn barrier_missing_inner(&self, ticket: &BarrierTicket, with_frozen: bool) -> Vec<NodeId> {
        (0..self.members.len())
            .filter(|r| *r != self.my_rank)
            .filter(|r| {
                let behind = self.barrier.load_u64(r * WORD) < ticket.epoch;
                behind && (with_frozen || !self.is_frozen(*r))
            })
            .map(|r| self.members[r].id)
            .collect()
    }

    /// A barrier among the live members, bounded by `timeout`: returns the members that did not
    /// arrive (empty on success). Frozen members are not waited for and are listed if they had
    /// not arrived. Every member must call it the same number of times.
    pub fn sync_with_members(&self, timeout: Duration) -> Result<Vec<NodeId>, SstError> {
        let deadline = Instant::now() + timeout;
        let ticket = self.barrier_enter()?;
        loop {
            let seen = self.doorbell.epoch();
            if self.barrier_missing_inner(&ticket, false).is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.doorbell.wait(seen, deadline - now);
        }
        let missing = self.barrier_missing(&ticket);
        if !missing.is_empty() {
            tracing::warn!(region = %self.region_id, ?missing, "barrier incomplete");
        }
        Ok(missing)
    }
}
