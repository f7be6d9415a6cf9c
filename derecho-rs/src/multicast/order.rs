//! The arithmetic of total order in one shard: pure functions, no state shared with anyone.
//!
//! Every sender numbers its messages 0, 1, 2, … (one counter for small and large messages).
//! The shard's total order is round-robin over senders: message `index` of the sender with
//! sender rank `r` has global sequence number `seq = index × num_senders + r`. A member knows
//! it has the prefix of that order up to `seq` once it has, from every sender, every message
//! the prefix contains; the shard may deliver up to the minimum of those prefixes over its
//! members (stability). An idle sender would stall the round robin, so senders answer others'
//! messages with *null* messages that only advance their index.
//!
//! Indices and sequence numbers are `i64`, with −1 meaning "none yet", as the SST counters
//! that carry them start at −1.

use std::collections::BTreeSet;

/// Round-robin numbering for a shard with `num_senders` senders.
///
/// A shard may have no senders (its members only receive from other subgroups' traffic, or
/// nothing at all); its round robin is empty: no sender rank exists, so [`RoundRobin::seq`] and
/// [`RoundRobin::split`] are never called for it, and [`RoundRobin::complete_prefix`] is −1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundRobin {
    num_senders: i64,
}

impl RoundRobin {
    /// Numbering for `num_senders` senders (0 for a shard nobody sends in).
    pub fn new(num_senders: usize) -> Self {
        Self {
            num_senders: num_senders as i64,
        }
    }

    /// Number of senders.
    pub fn senders(&self) -> usize {
        self.num_senders as usize
    }

    /// Global sequence number of message `index` of sender rank `rank`.
    pub fn seq(&self, index: i64, rank: usize) -> i64 {
        // Rule: a sender rank names one of the shard's senders.
        assert!(
            (rank as i64) < self.num_senders,
            "sender rank {rank} of {self:?}"
        );
        index * self.num_senders + rank as i64
    }

    /// The (index, sender rank) of a global sequence number (`seq ≥ 0`).
    pub fn split(&self, seq: i64) -> (i64, usize) {
        // Rule: only a shard with senders has sequence numbers.
        assert!(
            self.num_senders > 0,
            "sequence number {seq} in a shard without senders"
        );
        (
            seq.div_euclid(self.num_senders),
            seq.rem_euclid(self.num_senders) as usize,
        )
    }

    /// The longest prefix of the round robin that is complete, given for every sender the
    /// highest index received contiguously (−1 for none): the last `seq` before the first
    /// missing message. −1 if nothing is complete.
    pub fn complete_prefix(&self, received: &[i64]) -> i64 {
        // Rule: one received counter per sender.
        debug_assert_eq!(received.len() as i64, self.num_senders, "received counters");
        // The first missing message is index (min + 1) of the first sender holding the minimum.
        let mut min = i64::MAX;
        let mut at = 0;
        for (r, &v) in received.iter().enumerate() {
            if v < min {
                min = v;
                at = r;
            }
        }
        if received.is_empty() {
            return -1;
        }
        self.seq(min + 1, at) - 1
    }

    /// The last index of sender `rank` that a prefix ending at `seq` contains (−1 if none).
    pub fn last_index_in_prefix(&self, seq: i64, rank: usize) -> i64 {
        if seq < 0 {
            return -1;
        }
        let (index, r) = self.split(seq);
        if rank <= r {
            index
        } else {
            index - 1
        }
    }

    /// How many null messages sender `me`, whose next index is `my_next`, must send after
    /// receiving index `index` from sender `from`, so that the round robin does not wait on it:
    /// a sender ranked below `from` must move past `index`, one ranked above must reach it.
    pub fn nulls_needed(&self, me: usize, my_next: i64, from: usize, index: i64) -> i64 {
        let target = if me < from {
            index + 1
        } else if me > from {
            index
        } else {
            return 0;
        };
        (target - my_next).max(0)
    }

    /// Ordered-mode flow control: may sender `me` fill its message `index` with window `window`,
    /// given the smallest `delivered_num` over the shard? Its message `index − window` must be
    /// delivered everywhere first.
    pub fn window_allows(&self, me: usize, index: i64, window: usize, min_delivered: i64) -> bool {
        let older = index - window as i64;
        older < 0 || min_delivered >= self.seq(older, me)
    }
}

/// The indices received from one sender when they may complete out of order (a small message
/// through the SST ring can finish before an earlier large one through RDMC): the contiguous
/// prefix plus the set of indices received beyond it, bounded by the sender's window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    contiguous: i64,
    beyond: BTreeSet<i64>,
}

impl Received {
    /// Nothing received yet.
    pub fn new() -> Self {
        Self {
            contiguous: -1,
            beyond: BTreeSet::new(),
        }
    }

    /// The highest index received with every lower one (−1 for none).
    pub fn contiguous(&self) -> i64 {
        self.contiguous
    }

    /// Records `index` (and `count − 1` following ones, for a batch of nulls). Returns false if
    /// any of them was already recorded (a duplicate is a protocol error the caller reports).
    ///
    /// # Panics
    /// If `count < 1`: a slot stands for one real message or a positive number of nulls, and
    /// the caller checks a peer's header before recording it.
    pub fn record(&mut self, index: i64, count: i64) -> bool {
        // Rule: every record is at least one message.
        assert!(count >= 1, "recording {count} messages at index {index}");
        let mut fresh = true;
        for i in index..index + count {
            if i <= self.contiguous || !self.beyond.insert(i) {
                fresh = false;
            }
        }
        while self.beyond.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        fresh
    }

    /// Indices received beyond the contiguous prefix (waiting for a gap to fill).
    pub fn pending(&self) -> usize {
        self.beyond.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_round_trips() {
        let rr = RoundRobin::new(3);
        for index in 0..10 {
            for rank in 0..3 {
                assert_eq!(rr.split(rr.seq(index, rank)), (index, rank));
            }
        }
        assert_eq!(rr.seq(2, 1), 7);
    }

    #[test]
    fn complete_prefix_stops_at_the_first_gap() {
        let rr = RoundRobin::new(3);
        assert_eq!(rr.complete_prefix(&[-1, -1, -1]), -1);
        // Sender 0 has index 0; the others nothing: seq 0 complete.
        assert_eq!(rr.complete_prefix(&[0, -1, -1]), 0);
        // Everyone has index 0, sender 1 also index 1: prefix ends at (1,0) − 1... = seq 2.
        assert_eq!(rr.complete_prefix(&[0, 1, 0]), 2);
        assert_eq!(rr.complete_prefix(&[1, 1, 0]), 4);
        assert_eq!(rr.complete_prefix(&[5, 5, 5]), 17);
        let one = RoundRobin::new(1);
        assert_eq!(one.complete_prefix(&[4]), 4);
    }

    #[test]
    fn complete_prefix_agrees_with_brute_force() {
        for n in 1..5usize {
            let rr = RoundRobin::new(n);
            for code in 0..(4usize.pow(n as u32)) {
                let received: Vec<i64> = (0..n)
                    .map(|r| ((code / 4usize.pow(r as u32)) % 4) as i64 - 1)
                    .collect();
                let mut expect = -1;
                for seq in 0.. {
                    let (i, r) = rr.split(seq);
                    if i > received[r] {
                        break;
                    }
                    expect = seq;
                }
                assert_eq!(rr.complete_prefix(&received), expect, "{received:?}");
                for (r, &got) in received.iter().enumerate() {
                    assert!(rr.last_index_in_prefix(expect, r) <= got);
                }
            }
        }
    }

    #[test]
    fn nulls_keep_the_round_robin_moving() {
        let rr = RoundRobin::new(3);
        // I am rank 0 and idle (next index 0); rank 2 sent index 4: I must send 0..=4.
        assert_eq!(rr.nulls_needed(0, 0, 2, 4), 5);
        // I am rank 2 and idle; rank 0 sent index 4: I must reach index 4, i.e. send 0..=3.
        assert_eq!(rr.nulls_needed(2, 0, 0, 4), 4);
        assert_eq!(rr.nulls_needed(1, 9, 0, 4), 0);
        assert_eq!(rr.nulls_needed(1, 3, 1, 4), 0);
        // After the nulls the prefix covers the sender's message.
        let received = [4, 4, 3];
        assert!(rr.complete_prefix(&received) >= rr.seq(4, 0));
    }

    #[test]
    fn window_needs_the_older_message_delivered() {
        let rr = RoundRobin::new(2);
        assert!(rr.window_allows(1, 2, 3, -1));
        assert!(!rr.window_allows(1, 3, 3, 0));
        assert!(rr.window_allows(1, 3, 3, 1));
    }

    #[test]
    fn a_shard_without_senders_has_an_empty_round_robin() {
        let rr = RoundRobin::new(0);
        assert_eq!(rr.senders(), 0);
        assert_eq!(rr.complete_prefix(&[]), -1);
        assert_eq!(rr.last_index_in_prefix(-1, 0), -1);
    }

    #[test]
    #[should_panic(expected = "sender rank")]
    fn a_sender_rank_beyond_the_shard_is_refused() {
        RoundRobin::new(2).seq(0, 2);
    }

    #[test]
    #[should_panic(expected = "recording 0 messages")]
    fn recording_no_message_is_refused() {
        Received::new().record(3, 0);
    }

    #[test]
    fn received_tracks_gaps_and_duplicates() {
        let mut r = Received::new();
        assert!(r.record(1, 1));
        assert_eq!(r.contiguous(), -1);
        assert!(r.record(0, 1));
        assert_eq!(r.contiguous(), 1);
        assert!(r.record(2, 3));
        assert_eq!(r.contiguous(), 4);
        assert!(!r.record(3, 1), "duplicate");
        assert!(r.record(7, 1));
        assert_eq!((r.contiguous(), r.pending()), (4, 1));
    }
}
