//! `binomial_send`: the binomial pipeline over a hypercube, with twins for the ranks beyond it.
//!
//! # The hypercube
//!
//! Let k = ⌊log2 n⌋ and H = 2^k. Ranks 0..H are the vertices of a k-dimensional hypercube; at
//! step s every vertex exchanges with its neighbour across dimension i = s mod k. A block
//! enters the cube when the root sends it to vertex 2^i, and then spreads: the vertices with
//! bit i set pass the newest block they hold to their neighbours across each following
//! dimension, so after k steps block x is on every vertex with bit (x mod k) set, and at
//! step x + k those vertices hand it to the other half. Concretely, at step s vertex v ≠ 0
//! receives from v ⊕ 2^i:
//!
//! - if bit i of v is clear, block s − k (a *leaf* receive: v never forwards it);
//! - if bit i of v is set, block s + j − k, where j ∈ 1..=k is the cyclic distance from bit i
//!   to the next set bit of v (j = k when v = 2^i, whose neighbour is the root: block s);
//!   v forwards this block at each of the next j steps.
//!
//! Nothing is received when the block number is negative (the first k steps fill the pipe).
//! Block numbers of b − 1 or more all mean block b − 1: the root keeps re-injecting the last
//! block. Block x is complete at step x + k, so blocks 0..b − 1 are done after step b + k − 2;
//! each vertex receives exactly once during steps 0..k and at every step from k on, so its
//! b-th and last receive (at step b + k − 2 at the latest) is block b − 1. Total for a power of
//! two: **b + k − 1 steps**.
//!
//! # Twins
//!
//! When n = H + e with 0 < e < H, rank H + v − 1 is the twin of vertex v for v in 1..=e; the
//! two ranks of a vertex act as one vertex of the cube. At each step one of them, R, takes the
//! vertex's incoming block, and the other, O, does the vertex's outgoing send; in the same step
//! R passes one block to O. R and O swap after every step in which the vertex received a
//! forwarded block (bit i set), so O always holds the newest forwarded block, which is exactly
//! what the vertex sends next. (We swap after every step whose bit is set, counted from step 0:
//! before the vertex's first receive the extra swaps change nothing that matters.) The block
//! R passes to O at step s is s − 1 − k, the block the whole cube finished at step s − 1; it is
//! always on R and never on O. After the cube's last step (b + k − 2) each pair still misses
//! two blocks, b − 2 on one twin and b − 1 on the other, and they swap them in one extra step:
//! **b + k steps**. With b = 1 the extra step is spent differently so that a twin's first block
//! has the same source for every b: the rank of each pair still missing block 0 receives it
//! across dimension 0 from the neighbour vertex's O, exactly as it would at step k for b ≥ 2.
//!
//! Every rank sends at most one block and receives at most one block per step.

use super::{floor_log2, transfer, Step};

/// Every rank this one may talk to: its twin, and both ranks of each neighbour vertex.
pub(super) fn peers(n: usize, rank: usize) -> Vec<usize> {
    let cube = Cube::new(n);
    let v = cube.vertex_of(rank);
    let mut peers = Vec::with_capacity(2 * cube.dims + 1);
    if let Some(twin) = cube.twin_of(v) {
        peers.push(v);
        peers.push(twin);
    }
    for i in 0..cube.dims {
        let u = v ^ (1 << i);
        peers.push(u);
        peers.extend(cube.twin_of(u));
    }
    peers
}

/// The shape of the hypercube for a group of n ranks.
#[derive(Debug, Clone, Copy)]
struct Cube {
    n: usize,
    /// k = ⌊log2 n⌋.
    dims: usize,
    /// H = 2^k: the number of vertices.
    vertices: usize,
}

impl Cube {
    fn new(n: usize) -> Self {
        let dims = floor_log2(n);
        Cube {
            n,
            dims,
            vertices: 1 << dims,
        }
    }

    /// The vertex a rank belongs to.
    fn vertex_of(&self, rank: usize) -> usize {
        if rank < self.vertices {
            rank
        } else {
            rank + 1 - self.vertices
        }
    }

    /// The twin rank of vertex v, if it has one (vertices 1..=n − H do).
    fn twin_of(&self, v: usize) -> Option<usize> {
        let twin = v + self.vertices - 1;
        (v > 0 && twin < self.n).then_some(twin)
    }

    /// Cyclic distance (1..=k) from bit i of v to the next set bit of v above it.
    fn next_set_distance(&self, v: usize, i: usize) -> usize {
        let k = self.dims;
        let rotated = ((v >> i) | (v << (k - i))) & (self.vertices - 1);
        match rotated >> 1 {
            0 => k,
            rest => rest.trailing_zeros() as usize + 1,
        }
    }

    /// Parity of the number of steps before s whose dimension bit is set in v: which twin is
    /// R at step s.
    fn swaps_odd(&self, v: usize, s: usize) -> bool {
        let k = self.dims;
        let rounds_odd = (s / k) % 2 == 1;
        let weight_odd = v.count_ones() % 2 == 1;
        let partial_odd = (v & ((1 << (s % k)) - 1)).count_ones() % 2 == 1;
        (rounds_odd && weight_odd) != partial_odd
    }

    /// The rank of vertex v that receives from the cube at step s (R).
    fn receiver(&self, v: usize, s: usize) -> usize {
        match self.twin_of(v) {
            Some(twin) if self.swaps_odd(v, s) => twin,
            _ => v,
        }
    }

    /// The rank of vertex v that sends into the cube at step s (O).
    fn sender(&self, v: usize, s: usize) -> usize {
        match self.twin_of(v) {
            Some(twin) if !self.swaps_odd(v, s) => twin,
            _ => v,
        }
    }

    /// The block vertex v ≠ 0 receives at cube step s of a message of `blocks` blocks.
    fn vertex_block(&self, v: usize, s: usize, blocks: usize) -> Option<usize> {
        let k = self.dims;
        let i = s % k;
        if v & (1 << i) == 0 {
            s.checked_sub(k)
        } else {
            let j = self.next_set_distance(v, i);
            (s + j).checked_sub(k).map(|x| x.min(blocks - 1))
        }
    }

    /// The latest step ≤ s whose dimension bit is set in v (v ≠ 0).
    fn last_set_step(&self, v: usize, s: usize) -> Option<usize> {
        let k = self.dims;
        let i = s % k;
        let low = v & ((2 << i) - 1);
        let back = if low != 0 {
            i - floor_log2(low)
        } else {
            i + k - floor_log2(v)
        };
        s.checked_sub(back)
    }
}

/// One rank's place in the binomial pipeline.
#[derive(Debug, Clone)]
pub(super) struct Binomial {
    cube: Cube,
    rank: usize,
    blocks: usize,
    /// Steps `0..cube_steps` run the hypercube (b + k − 1 of them); a step after that is the
    /// twins' final exchange.
    cube_steps: usize,
}

impl Binomial {
    /// `num_steps` is b + k − 1 or b + k (checked by the caller).
    pub(super) fn new(n: usize, rank: usize, blocks: usize, num_steps: usize) -> Self {
        let cube = Cube::new(n);
        let cube_steps = if n.is_power_of_two() {
            num_steps
        } else {
            num_steps.saturating_sub(1)
        };
        Binomial {
            cube,
            rank,
            blocks,
            cube_steps,
        }
    }

    /// The caller guarantees s < num_steps, hence n ≥ 2 and k ≥ 1.
    pub(super) fn step(&self, s: usize) -> Step {
        if s < self.cube_steps {
            self.cube_step(s)
        } else if self.blocks == 1 {
            self.final_step_single_block(s)
        } else {
            self.final_step(s)
        }
    }

    fn cube_step(&self, s: usize) -> Step {
        let cube = &self.cube;
        let k = cube.dims;
        let v = cube.vertex_of(self.rank);
        let u = v ^ (1 << (s % k));
        let (r_v, o_v) = (cube.receiver(v, s), cube.sender(v, s));
        let mut step = Step::default();
        if self.rank == o_v && u != 0 {
            step.send = cube
                .vertex_block(u, s, self.blocks)
                .map(|block| transfer(s, block, cube.receiver(u, s)));
        }
        if self.rank == r_v && v != 0 {
            step.recv = cube
                .vertex_block(v, s, self.blocks)
                .map(|block| transfer(s, block, cube.sender(u, s)));
        }
        if r_v != o_v {
            if let Some(block) = s.checked_sub(k + 1) {
                if self.rank == r_v {
                    step.send = Some(transfer(s, block, o_v));
                } else {
                    step.recv = Some(transfer(s, block, r_v));
                }
            }
        }
        step
    }

    /// b = 1, n not a power of two: s = k. The rank of each pair without block 0 (R at step k)
    /// gets it from the O of its neighbour across dimension 0.
    fn final_step_single_block(&self, s: usize) -> Step {
        let cube = &self.cube;
        let v = cube.vertex_of(self.rank);
        let u = v ^ 1;
        let mut step = Step::default();
        if self.rank == cube.sender(v, s) && cube.twin_of(u).is_some() {
            step.send = Some(transfer(s, 0, cube.receiver(u, s)));
        }
        if cube.twin_of(v).is_some() && self.rank == cube.receiver(v, s) {
            step.recv = Some(transfer(s, 0, cube.sender(u, s)));
        }
        step
    }

    /// b ≥ 2, n not a power of two: the twins swap blocks b − 1 and b − 2. Block b − 1 is on
    /// the rank that was R at the vertex's last forwarded receive.
    fn final_step(&self, s: usize) -> Step {
        let cube = &self.cube;
        let v = cube.vertex_of(self.rank);
        let Some(twin) = cube.twin_of(v) else {
            return Step::default();
        };
        let Some(t) = s.checked_sub(1).and_then(|s| cube.last_set_step(v, s)) else {
            return Step::default();
        };
        let (last, before_last) = (self.blocks - 1, self.blocks - 2);
        let other = if self.rank == v { twin } else { v };
        let (sent, received) = if self.rank == cube.receiver(v, t) {
            (last, before_last)
        } else {
            (before_last, last)
        };
        Step {
            send: Some(transfer(s, sent, other)),
            recv: Some(transfer(s, received, other)),
        }
    }
}
