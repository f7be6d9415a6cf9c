//! `sequential_send`: the root sends the whole message to each receiver in turn.
//!
//! Steps (r − 1)·b ..< r·b carry blocks 0..b from the root to rank r, one block per step:
//! b · (n − 1) steps in all.

use std::ops::Range;

use super::{transfer, Direction, Step};

/// Every rank this one talks to: the root talks to everyone, a receiver only to the root.
pub(super) fn peers(n: usize, rank: usize) -> Vec<usize> {
    if rank == 0 {
        (1..n).collect()
    } else {
        vec![0]
    }
}

/// One rank's place in the sequential schedule.
#[derive(Debug, Clone)]
pub(super) struct Sequential {
    n: usize,
    rank: usize,
    blocks: usize,
}

impl Sequential {
    pub(super) fn new(n: usize, rank: usize, blocks: usize) -> Self {
        Sequential { n, rank, blocks }
    }

    /// The root sends at every step; rank r receives during steps (r − 1)·b ..< r·b. The
    /// products do not overflow: the caller checked that b · (n − 1) fits.
    pub(super) fn window(&self, direction: Direction) -> Range<usize> {
        let b = self.blocks;
        match direction {
            Direction::Send if self.rank == 0 => 0..b * (self.n - 1),
            Direction::Recv if self.rank > 0 => (self.rank - 1) * b..self.rank * b,
            _ => 0..0,
        }
    }

    pub(super) fn step(&self, s: usize) -> Step {
        let b = self.blocks;
        if self.rank == 0 {
            Step {
                send: Some(transfer(s, s % b, 1 + s / b)),
                recv: None,
            }
        } else {
            Step {
                send: None,
                recv: self
                    .window(Direction::Recv)
                    .contains(&s)
                    .then(|| transfer(s, s % b, 0)),
            }
        }
    }
}
