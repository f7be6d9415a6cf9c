//! The view manager's decisions, without I/O: what a member does with the outcome of its
//! view's change protocol.
//!
//! [`after`] turns an [`Outcome`] into a [`Step`]; the node's view manager thread carries it
//! out (stops the old multicast, cuts removed members off, welcomes joiners, transfers state,
//! installs the next view). Each rule is tested here on its own.

use super::change::Outcome;
use super::first_view::LayoutFn;
use super::view::View;
use crate::multicast::Resend;
use crate::node::StopReason;
use crate::NodeId;

/// What a member does once its view has ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Stop, saying why: this member is no longer in the group.
    Stop(StopReason),
    /// Install `view` next, after cutting off `cut_off` (removed members that may still run
    /// and must learn that they are out).
    Next {
        /// The next view (adequate or not).
        view: View,
        /// Removed members to cut off.
        cut_off: Vec<NodeId>,
    },
}

/// The step of member `me` of `old` once its change protocol reports `outcome`; `layout`
/// divides the next membership into subgroups.
pub fn after(old: &View, me: NodeId, outcome: &Outcome, layout: &LayoutFn) -> Step {
    match outcome {
        // Rule 1: a member that another live member suspects is out; it must not go on.
        Outcome::Evicted => Step::Stop(StopReason::Evicted),
        // Rule 2: partition safety: a member that would be in a minority stops.
        Outcome::Partitioned { suspected, members } => Step::Stop(StopReason::Partitioned {
            suspected: *suspected,
            members: *members,
        }),
        Outcome::Trimmed {
            removed, joined, ..
        } => {
            // Rule 3: every member applies the same committed changes to the same view, so
            // every member computes the same next view (one membership per view id). A next
            // view the layout cannot provision is inadequate, never skipped.
            let view = old.next(removed, joined, layout);
            debug_assert_eq!(view.vid, old.vid + 1, "views follow one another by one");
            // Rule 4: the committed changes decide membership; one that leaves this member
            // out means it was removed.
            if view.rank_of(me).is_none() {
                return Step::Stop(StopReason::Removed);
            }
            Step::Next {
                view,
                cut_off: removed.clone(),
            }
        }
    }
}

/// This member's messages owed to the next view once a view ended with `trimmed` of its
/// messages undelivered, while `earlier` were still owed from before: the trimmed ones were
/// sent before any earlier one was taken again (earlier ones wait only when a view wedged
/// before taking them), so they go first and each sender's order is kept.
pub fn owed_after_trim(trimmed: Vec<Resend>, earlier: Vec<Resend>) -> Vec<Resend> {
    let mut owed = trimmed;
    owed.extend(earlier);
    owed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::gms::testing::{member, one_shard_of_at_least as need, view_of};

    fn view(ids: &[NodeId], layout: &LayoutFn) -> View {
        view_of(7, ids, layout)
    }

    fn trimmed(removed: &[NodeId], joined: &[NodeId]) -> Outcome {
        Outcome::Trimmed {
            removed: removed.to_vec(),
            joined: joined.iter().copied().map(member).collect(),
            resend: Vec::new(),
        }
    }

    #[test]
    fn rule_1_and_2_an_evicted_or_minority_member_stops_and_says_why() {
        let layout = need(1);
        let v = view(&[0, 1, 2], &layout);
        assert!(matches!(
            after(&v, 1, &Outcome::Evicted, &layout),
            Step::Stop(_)
        ));
        match after(
            &v,
            1,
            &Outcome::Partitioned {
                suspected: 2,
                members: 3,
            },
            &layout,
        ) {
            Step::Stop(why) => assert!(matches!(why, StopReason::Partitioned { .. }), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rule_3_the_next_view_follows_by_one_and_cuts_off_the_removed() {
        let layout = need(1);
        let v = view(&[0, 1, 2], &layout);
        match after(&v, 1, &trimmed(&[0], &[5]), &layout) {
            Step::Next { view, cut_off } => {
                assert_eq!(view.vid, 8);
                assert_eq!(view.ids(), vec![1, 2, 5]);
                assert_eq!(view.joined, vec![5]);
                assert_eq!(cut_off, vec![0]);
                assert!(view.is_adequate());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rule_3_a_next_view_the_layout_cannot_provision_is_installed_inadequate() {
        let layout = need(3);
        let v = view(&[0, 1, 2], &layout);
        match after(&v, 1, &trimmed(&[2], &[]), &layout) {
            Step::Next { view, .. } => {
                assert_eq!(view.vid, 8);
                assert!(!view.is_adequate());
                assert!(view.subgroups.is_empty());
                assert_eq!(view.held[0].shards[0].members, vec![0, 1]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rule_4_changes_that_remove_this_member_stop_it() {
        let layout = need(1);
        let v = view(&[0, 1, 2], &layout);
        assert!(matches!(
            after(&v, 2, &trimmed(&[2], &[]), &layout),
            Step::Stop(_)
        ));
    }

    #[test]
    fn trimmed_messages_go_before_the_ones_owed_from_earlier_views() {
        let r = |n: u8| Resend {
            subgroup: 0,
            payload: vec![n],
            flags: 0,
        };
        let owed = owed_after_trim(vec![r(3), r(4)], vec![r(1)]);
        let order: Vec<u8> = owed.iter().map(|x| x.payload[0]).collect();
        assert_eq!(order, vec![3, 4, 1]);
    }
}
