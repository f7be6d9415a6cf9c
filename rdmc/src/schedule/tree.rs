//! `tree_send`: a binomial tree that forwards the whole message along each edge.
//!
//! The transfer runs in ⌈log2 n⌉ stages of b steps each. In stage g (steps g·b ..< (g+1)·b),
//! every rank r < 2^g with r + 2^g < n sends blocks 0..b, one per step, to rank r + 2^g. So
//! rank r > 0 receives the whole message from r − 2^⌊log2 r⌋ in stage ⌊log2 r⌋ and then sends
//! it on in every later stage that has a target: b · ⌈log2 n⌉ steps in all. A rank sends or
//! receives in a stage, never both.

use std::ops::Range;

use super::{ceil_log2, floor_log2, transfer, Direction, Step};

/// Every rank this one talks to: its parent and its children in the binomial tree.
pub(super) fn peers(n: usize, rank: usize) -> Vec<usize> {
    let mut peers = Vec::new();
    if rank > 0 {
        peers.push(rank - (1 << floor_log2(rank)));
    }
    let (first, end) = send_stages(n, rank);
    peers.extend((first..end).map(|g| rank + (1 << g)));
    peers
}

/// The stages `first..end` in which `rank` sends: from the first g with 2^g > rank to the last
/// with rank + 2^g < n.
fn send_stages(n: usize, rank: usize) -> (usize, usize) {
    let first = if rank == 0 { 0 } else { floor_log2(rank) + 1 };
    let mut end = first;
    while end < ceil_log2(n) && rank + (1 << end) < n {
        end += 1;
    }
    (first, end)
}

/// One rank's place in the tree.
#[derive(Debug, Clone)]
pub(super) struct Tree {
    rank: usize,
    blocks: usize,
    /// Stages in which this rank sends.
    send_stages: Range<usize>,
}

impl Tree {
    pub(super) fn new(n: usize, rank: usize, blocks: usize) -> Self {
        let (first, end) = send_stages(n, rank);
        Tree {
            rank,
            blocks,
            send_stages: first..end,
        }
    }

    /// Sends happen in the steps of `send_stages`, the receive in the steps of stage
    /// ⌊log2 rank⌋. The products do not overflow: the caller checked that b · ⌈log2 n⌉ fits.
    pub(super) fn window(&self, direction: Direction) -> Range<usize> {
        let b = self.blocks;
        match direction {
            Direction::Send => self.send_stages.start * b..self.send_stages.end * b,
            Direction::Recv if self.rank > 0 => {
                let g = floor_log2(self.rank);
                g * b..(g + 1) * b
            }
            Direction::Recv => 0..0,
        }
    }

    pub(super) fn step(&self, s: usize) -> Step {
        let b = self.blocks;
        let (stage, block) = (s / b, s % b);
        let send = self
            .send_stages
            .contains(&stage)
            .then(|| transfer(s, block, self.rank + (1 << stage)));
        let recv = (self.rank > 0 && floor_log2(self.rank) == stage)
            .then(|| transfer(s, block, self.rank - (1 << stage)));
        Step { send, recv }
    }
}
