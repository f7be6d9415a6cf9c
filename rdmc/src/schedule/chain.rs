//! `chain_send`: a pipeline along the ranks, 0 → 1 → … → n − 1.
//!
//! At step s, rank r sends block s − r to rank r + 1 (when 0 ≤ s − r < b and r < n − 1), so
//! rank r receives block s + 1 − r from rank r − 1. Block b − 1 reaches rank n − 1 at step
//! (b − 1) + (n − 2): b + n − 2 steps in all.

use std::ops::Range;

use super::{transfer, Direction, Step};

/// Every rank this one talks to: its two neighbours in the chain.
pub(super) fn peers(n: usize, rank: usize) -> Vec<usize> {
    let mut peers = Vec::with_capacity(2);
    if rank > 0 {
        peers.push(rank - 1);
    }
    if rank + 1 < n {
        peers.push(rank + 1);
    }
    peers
}

/// One rank's place in the chain.
#[derive(Debug, Clone)]
pub(super) struct Chain {
    n: usize,
    rank: usize,
    blocks: usize,
}

impl Chain {
    pub(super) fn new(n: usize, rank: usize, blocks: usize) -> Self {
        Chain { n, rank, blocks }
    }

    /// Steps `rank..rank + b` carry this rank's sends, `rank − 1..rank − 1 + b` its receives.
    pub(super) fn window(&self, direction: Direction) -> Range<usize> {
        match direction {
            Direction::Send if self.rank + 1 < self.n => self.rank..self.rank + self.blocks,
            Direction::Recv if self.rank > 0 => self.rank - 1..self.rank - 1 + self.blocks,
            _ => 0..0,
        }
    }

    pub(super) fn step(&self, s: usize) -> Step {
        let in_window = |d| self.window(d).contains(&s);
        Step {
            send: in_window(Direction::Send).then(|| transfer(s, s - self.rank, self.rank + 1)),
            recv: in_window(Direction::Recv).then(|| transfer(s, s + 1 - self.rank, self.rank - 1)),
        }
    }
}
