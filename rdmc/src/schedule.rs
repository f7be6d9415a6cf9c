//! Block schedules: at each step, which block a member sends to whom and which block it receives
//! from whom.
//!
//! A message of `blocks` blocks travels from rank 0 (the root, which holds every block from the
//! start) to the other members of a group of `group_size` ranks. A schedule is a pure function
//! of (algorithm, group size, rank, block count): no clocks, no buffers, no fabric. Steps are
//! numbered from 0; a transfer at step `s` is sent by one rank and received by its peer at the
//! same step `s`, and a rank only sends a block it held before that step. In every algorithm
//! here a rank sends at most one block and receives at most one block per step, so a step is a
//! pair of optional transfers ([`Step`]).
//!
//! | algorithm | config name | steps for n ≥ 2 (0 when n = 1) |
//! |---|---|---|
//! | [`Algorithm::Binomial`] | `binomial_send` | b + log2 n − 1 if n is a power of two, else b + ⌊log2 n⌋ |
//! | [`Algorithm::Chain`] | `chain_send` | b + n − 2 |
//! | [`Algorithm::Sequential`] | `sequential_send` | b · (n − 1) |
//! | [`Algorithm::Tree`] | `tree_send` | b · ⌈log2 n⌉ |
//!
//! The receiver does not know `b` until the first block arrives (the block count travels with
//! each block), so [`Participant::first_block_source`] names the peer of the first block without
//! knowing `b`; once it is known, [`Schedule::first_recv`] gives the exact transfer.
//!
//! This module owns the schedules only. It must not know about memory regions, the fabric, flow
//! control or failures: the transfer engine runs a [`Schedule`] and decides how many steps may be
//! in flight.

mod binomial;
mod chain;
mod sequential;
mod tree;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// Largest group size a schedule accepts (2^16 ranks).
pub const MAX_GROUP_SIZE: usize = 1 << 16;

/// Largest block count a schedule accepts (2^32 blocks).
pub const MAX_BLOCKS: u64 = 1 << 32;

/// Block count used to compute the `b`-independent [`FirstBlock`]: larger than any first block
/// number an algorithm uses, so no clamping to `b − 1` happens.
const NOMINAL_BLOCKS: usize = 64;

/// How a message is spread over the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// `binomial_send` (the default): the binomial pipeline over a hypercube of 2^⌊log2 n⌋
    /// vertices; ranks beyond the hypercube are twins of vertices 1, 2, … and share their
    /// vertex's traffic. Steps: b + log2 n − 1 when n is a power of two, else b + ⌊log2 n⌋.
    #[default]
    Binomial,
    /// `chain_send`: a pipeline along ranks 0 → 1 → … → n − 1. Steps: b + n − 2.
    Chain,
    /// `sequential_send`: the root sends the whole message to rank 1, then to rank 2, and so
    /// on, one block per step. Steps: b · (n − 1).
    Sequential,
    /// `tree_send`: a binomial tree, one whole message per tree edge; in stage g (b steps) every
    /// rank r < 2^g that holds the message sends it, block by block, to rank r + 2^g.
    /// Steps: b · ⌈log2 n⌉.
    Tree,
}

impl Algorithm {
    /// Every algorithm, in declaration order.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Binomial,
        Algorithm::Chain,
        Algorithm::Sequential,
        Algorithm::Tree,
    ];

    /// The name used in the configuration file (`rdmc_send_algorithm`), e.g. `binomial_send`.
    pub const fn config_name(self) -> &'static str {
        match self {
            Algorithm::Binomial => "binomial_send",
            Algorithm::Chain => "chain_send",
            Algorithm::Sequential => "sequential_send",
            Algorithm::Tree => "tree_send",
        }
    }

    /// Number of steps to send `blocks` blocks to a group of `group_size` ranks (see the table
    /// in the module documentation); 0 when `group_size` is 1.
    pub fn num_steps(self, group_size: usize, blocks: usize) -> Result<usize, ScheduleError> {
        check_group_size(group_size)?;
        check_blocks(blocks)?;
        let n = group_size;
        let b = blocks;
        if n == 1 {
            return Ok(0);
        }
        let steps = match self {
            Algorithm::Binomial => {
                let k = floor_log2(n);
                let extra = if n.is_power_of_two() { k - 1 } else { k };
                b.checked_add(extra)
            }
            Algorithm::Chain => b.checked_add(n - 2),
            Algorithm::Sequential => b.checked_mul(n - 1),
            Algorithm::Tree => b.checked_mul(ceil_log2(n)),
        };
        steps.ok_or(ScheduleError::TooManySteps)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.config_name())
    }
}

impl FromStr for Algorithm {
    type Err = ParseAlgorithmError;

    /// Parses a configuration name exactly (`binomial_send`, `chain_send`, `sequential_send`,
    /// `tree_send`); trimming and case folding are the configuration reader's business.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.config_name() == s)
            .ok_or_else(|| ParseAlgorithmError(s.to_owned()))
    }
}

/// A string that names no [`Algorithm`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown RDMC send algorithm {0:?} (expected binomial_send, chain_send, sequential_send or \
     tree_send)"
)]
pub struct ParseAlgorithmError(pub String);

/// Why a schedule cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The group has no members.
    #[error("group size is zero")]
    EmptyGroup,
    /// The group is larger than [`MAX_GROUP_SIZE`].
    #[error("group size {0} exceeds the limit of {MAX_GROUP_SIZE}")]
    GroupTooLarge(usize),
    /// The rank is not a member of the group.
    #[error("rank {rank} is outside a group of {group_size}")]
    RankOutOfRange {
        /// The rank asked for.
        rank: usize,
        /// The size of the group.
        group_size: usize,
    },
    /// The message has no blocks.
    #[error("a message has at least one block")]
    NoBlocks,
    /// The message has more than [`MAX_BLOCKS`] blocks.
    #[error("{0} blocks exceed the limit of {MAX_BLOCKS}")]
    TooManyBlocks(usize),
    /// The step count does not fit in a `usize` on this platform.
    #[error("the step count does not fit in usize")]
    TooManySteps,
}

/// One block moving between two ranks at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transfer {
    /// The step at which the block moves; sender and receiver both see the same step.
    pub step: usize,
    /// The block number, in `0..blocks`.
    pub block: usize,
    /// The other rank: the receiver for a send, the sender for a receive.
    pub peer: usize,
}

/// What one rank does at one step: at most one send and at most one receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Step {
    /// The block this rank sends at this step, if any.
    pub send: Option<Transfer>,
    /// The block this rank receives at this step, if any.
    pub recv: Option<Transfer>,
}

impl Step {
    /// True if this rank neither sends nor receives at this step.
    pub fn is_idle(&self) -> bool {
        self.send.is_none() && self.recv.is_none()
    }
}

/// Where a receiver's first block comes from, without knowing the block count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FirstBlock {
    /// The rank that sends the first block; the same for every block count.
    pub peer: usize,
    /// The block number when the message is long enough; a message of `b` blocks delivers
    /// block `min(block, b − 1)` first (see [`FirstBlock::block_for`]).
    pub block: usize,
}

impl FirstBlock {
    /// The number of the first block received in a message of `blocks` blocks:
    /// `min(self.block, blocks − 1)`.
    pub fn block_for(&self, blocks: usize) -> usize {
        self.block.min(blocks.saturating_sub(1))
    }
}

/// A rank's place in one transfer group: algorithm, group size and rank, validated. Everything
/// here holds for every block count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Participant {
    algorithm: Algorithm,
    group_size: usize,
    rank: usize,
}

impl Participant {
    /// Checks `group_size` (1..=[`MAX_GROUP_SIZE`]) and `rank` (< `group_size`).
    pub fn new(
        algorithm: Algorithm,
        group_size: usize,
        rank: usize,
    ) -> Result<Self, ScheduleError> {
        check_group_size(group_size)?;
        if rank >= group_size {
            return Err(ScheduleError::RankOutOfRange { rank, group_size });
        }
        Ok(Participant {
            algorithm,
            group_size,
            rank,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The number of ranks in the group.
    pub fn group_size(&self) -> usize {
        self.group_size
    }

    /// This rank; 0 is the root (the sender of the message).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// True for rank 0, the sender of the message.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Every rank this one may send to or receive from, for any block count, sorted and without
    /// this rank: the connections the engine needs.
    pub fn peers(&self) -> Vec<usize> {
        let (n, r) = (self.group_size, self.rank);
        let mut peers = match self.algorithm {
            Algorithm::Binomial => binomial::peers(n, r),
            Algorithm::Chain => chain::peers(n, r),
            Algorithm::Sequential => sequential::peers(n, r),
            Algorithm::Tree => tree::peers(n, r),
        };
        peers.sort_unstable();
        peers.dedup();
        peers.retain(|&p| p != r);
        peers
    }

    /// The peer (and nominal block number) of this rank's first received block, valid for
    /// every block count; `None` for the root and in a group of one.
    pub fn first_block_source(&self) -> Option<FirstBlock> {
        let first = self.schedule(NOMINAL_BLOCKS).ok()?.first_recv()?;
        Some(FirstBlock {
            peer: first.peer,
            block: first.block,
        })
    }

    /// The schedule of a message of `blocks` blocks (1..=[`MAX_BLOCKS`]).
    pub fn schedule(&self, blocks: usize) -> Result<Schedule, ScheduleError> {
        check_blocks(blocks)?;
        let num_steps = self.algorithm.num_steps(self.group_size, blocks)?;
        let (n, r, b) = (self.group_size, self.rank, blocks);
        let plan = match self.algorithm {
            Algorithm::Binomial => Plan::Binomial(binomial::Binomial::new(n, r, b, num_steps)),
            Algorithm::Chain => Plan::Chain(chain::Chain::new(n, r, b)),
            Algorithm::Sequential => Plan::Sequential(sequential::Sequential::new(n, r, b)),
            Algorithm::Tree => Plan::Tree(tree::Tree::new(n, r, b)),
        };
        Ok(Schedule {
            participant: *self,
            blocks,
            num_steps,
            plan,
        })
    }
}

/// The per-algorithm state behind a [`Schedule`].
#[derive(Debug, Clone)]
enum Plan {
    Binomial(binomial::Binomial),
    Chain(chain::Chain),
    Sequential(sequential::Sequential),
    Tree(tree::Tree),
}

/// One rank's schedule for one message: for each step in `0..num_steps()`, at most one send and
/// at most one receive. Building one costs O(1) and allocates nothing; each per-step query is
/// O(1) (O(log n) bit operations at most).
#[derive(Debug, Clone)]
pub struct Schedule {
    participant: Participant,
    blocks: usize,
    num_steps: usize,
    plan: Plan,
}

/// Builds the schedule of `rank` in a group of `group_size` sending `blocks` blocks with
/// `algorithm`; the same as [`Participant::new`] followed by [`Participant::schedule`].
pub fn schedule(
    algorithm: Algorithm,
    group_size: usize,
    rank: usize,
    blocks: usize,
) -> Result<Schedule, ScheduleError> {
    Schedule::new(algorithm, group_size, rank, blocks)
}

impl Schedule {
    /// Builds the schedule of `rank` in a group of `group_size` sending `blocks` blocks.
    /// Fails if `group_size` is 0 or above [`MAX_GROUP_SIZE`], `rank ≥ group_size`, `blocks`
    /// is 0 or above [`MAX_BLOCKS`], or the step count overflows `usize`.
    pub fn new(
        algorithm: Algorithm,
        group_size: usize,
        rank: usize,
        blocks: usize,
    ) -> Result<Self, ScheduleError> {
        Participant::new(algorithm, group_size, rank)?.schedule(blocks)
    }

    /// The algorithm, group size and rank.
    pub fn participant(&self) -> Participant {
        self.participant
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.participant.algorithm
    }

    /// The number of ranks in the group.
    pub fn group_size(&self) -> usize {
        self.participant.group_size
    }

    /// This rank; 0 is the root.
    pub fn rank(&self) -> usize {
        self.participant.rank
    }

    /// The number of blocks in the message.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// The number of steps of the whole transfer (the same for every rank); see
    /// [`Algorithm::num_steps`] for the formulas.
    pub fn num_steps(&self) -> usize {
        self.num_steps
    }

    /// What this rank does at `step`; idle for every step ≥ [`num_steps`](Self::num_steps).
    pub fn step(&self, step: usize) -> Step {
        if step >= self.num_steps {
            return Step::default();
        }
        match &self.plan {
            Plan::Binomial(p) => p.step(step),
            Plan::Chain(p) => p.step(step),
            Plan::Sequential(p) => p.step(step),
            Plan::Tree(p) => p.step(step),
        }
    }

    /// The block this rank sends at `step`, if any.
    pub fn send_at(&self, step: usize) -> Option<Transfer> {
        self.step(step).send
    }

    /// The block this rank receives at `step`, if any.
    pub fn recv_at(&self, step: usize) -> Option<Transfer> {
        self.step(step).recv
    }

    /// The first send at a step ≥ `from`. Chain, sequential and tree jump straight to it; the
    /// binomial pipeline scans, and its gaps between sends are at most a few steps.
    pub fn next_send(&self, from: usize) -> Option<Transfer> {
        let window = self.window(Direction::Send);
        (from.max(window.start)..window.end).find_map(|s| self.send_at(s))
    }

    /// The first receive at a step ≥ `from` (same cost as [`next_send`](Self::next_send)).
    pub fn next_recv(&self, from: usize) -> Option<Transfer> {
        let window = self.window(Direction::Recv);
        (from.max(window.start)..window.end).find_map(|s| self.recv_at(s))
    }

    /// This rank's first received block (`None` for the root). Its peer is always
    /// [`Participant::first_block_source`]'s.
    pub fn first_recv(&self) -> Option<Transfer> {
        self.next_recv(0)
    }

    /// Every send of this rank, in step order (computed lazily).
    pub fn sends(&self) -> impl Iterator<Item = Transfer> + '_ {
        let mut from = 0;
        std::iter::from_fn(move || {
            let t = self.next_send(from)?;
            from = t.step + 1;
            Some(t)
        })
    }

    /// Every receive of this rank, in step order (computed lazily); `blocks()` of them for every
    /// rank but the root.
    pub fn recvs(&self) -> impl Iterator<Item = Transfer> + '_ {
        let mut from = 0;
        std::iter::from_fn(move || {
            let t = self.next_recv(from)?;
            from = t.step + 1;
            Some(t)
        })
    }

    /// Every step `0..num_steps()`, idle ones included (computed lazily).
    pub fn steps(&self) -> impl Iterator<Item = Step> + '_ {
        (0..self.num_steps).map(|s| self.step(s))
    }

    /// The steps outside of which this rank has nothing to do in `direction`.
    fn window(&self, direction: Direction) -> Range<usize> {
        let window = match &self.plan {
            Plan::Binomial(_) => 0..self.num_steps,
            Plan::Chain(p) => p.window(direction),
            Plan::Sequential(p) => p.window(direction),
            Plan::Tree(p) => p.window(direction),
        };
        window.start..window.end.min(self.num_steps)
    }
}

/// Which half of a [`Step`] a window is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Send,
    Recv,
}

fn check_group_size(group_size: usize) -> Result<(), ScheduleError> {
    match group_size {
        0 => Err(ScheduleError::EmptyGroup),
        n if n > MAX_GROUP_SIZE => Err(ScheduleError::GroupTooLarge(n)),
        _ => Ok(()),
    }
}

fn check_blocks(blocks: usize) -> Result<(), ScheduleError> {
    if blocks == 0 {
        return Err(ScheduleError::NoBlocks);
    }
    match u64::try_from(blocks) {
        Ok(b) if b <= MAX_BLOCKS => Ok(()),
        _ => Err(ScheduleError::TooManyBlocks(blocks)),
    }
}

/// ⌊log2 x⌋ for x ≥ 1 (0 for x = 0).
fn floor_log2(x: usize) -> usize {
    x.checked_ilog2().unwrap_or(0) as usize
}

/// ⌈log2 x⌉ for x ≥ 1 (0 for x ≤ 1).
fn ceil_log2(x: usize) -> usize {
    if x <= 1 {
        0
    } else {
        floor_log2(x - 1) + 1
    }
}

/// A transfer at `step` of `block` with `peer`.
fn transfer(step: usize, block: usize, peer: usize) -> Transfer {
    Transfer { step, block, peer }
}
