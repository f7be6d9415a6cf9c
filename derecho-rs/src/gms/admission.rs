//! What a member's GMS port answers a join request: a decision without I/O.
//!
//! [`admit`] looks only at the member's view, the request and the queue of nodes already
//! waiting; the GMS service carries the decision out on the socket. Keeping the rules here
//! lets each one be tested alone.

use super::view::{MemberInfo, View};
use super::wire::{Refusal, PROTOCOL_VERSION};
use crate::NodeId;

/// How a member answers one join request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Refuse it, saying why.
    Refuse(Refusal),
    /// Only the leader admits nodes: send the joiner there, with every member's GMS address
    /// so that it can ask again elsewhere if the leader fails.
    Redirect {
        /// The leader.
        leader: MemberInfo,
        /// The members' GMS addresses.
        members: Vec<std::net::SocketAddr>,
    },
    /// The joiner is already in this view (it joined with it, but the member that held its
    /// request failed before telling it): send it the view again.
    SendView,
    /// Queue it for the next view change (replacing an earlier request of the same node).
    Queue,
}

/// The decision of member `me` with `view` on a join request from `member` speaking
/// `version`, while `queued` holds the nodes already waiting (at most `max_queued`).
pub fn admit(
    view: &View,
    me: NodeId,
    version: u32,
    member: &MemberInfo,
    queued: &[MemberInfo],
    max_queued: usize,
) -> Admission {
    // Rule 1: one protocol version per group.
    if version != PROTOCOL_VERSION {
        return Admission::Refuse(Refusal::VersionMismatch {
            expected: PROTOCOL_VERSION,
        });
    }
    // Rule 2: only the leader (lowest rank) admits; everyone else redirects to it.
    if let Some(leader) = view.leader().filter(|l| l.id != me) {
        return Admission::Redirect {
            leader: leader.clone(),
            members: view.members.iter().map(MemberInfo::gms_addr).collect(),
        };
    }
    // Rule 3: an id belongs to one member. The same node asking again for the view it joined
    // with (same id and addresses) gets that view; anyone else with a member's id is refused.
    if view.rank_of(member.id).is_some() {
        return if view.joined.contains(&member.id) && view.members.contains(member) {
            Admission::SendView
        } else {
            Admission::Refuse(Refusal::IdInUse)
        };
    }
    // Rule 4: the queue is bounded; a node already queued may always renew its request.
    if queued.len() >= max_queued && !queued.iter().any(|m| m.id == member.id) {
        return Admission::Refuse(Refusal::NotNow(format!(
            "{max_queued} nodes are already waiting to join; try again"
        )));
    }
    Admission::Queue
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::gms::testing::member;

    fn view(ids: &[NodeId], joined: &[NodeId]) -> View {
        View {
            vid: 4,
            members: ids.iter().copied().map(member).collect(),
            joined: joined.to_vec(),
            ..View::default()
        }
    }

    #[test]
    fn rule_1_another_protocol_version_is_refused_before_anything_else() {
        let v = view(&[0, 1], &[]);
        assert_eq!(
            admit(&v, 1, PROTOCOL_VERSION + 1, &member(7), &[], 8),
            Admission::Refuse(Refusal::VersionMismatch {
                expected: PROTOCOL_VERSION
            })
        );
    }

    #[test]
    fn rule_2_a_member_that_does_not_lead_redirects_with_every_address() {
        let v = view(&[3, 1, 2], &[]);
        match admit(&v, 1, PROTOCOL_VERSION, &member(7), &[], 8) {
            Admission::Redirect { leader, members } => {
                assert_eq!(leader.id, 3);
                assert_eq!(members.len(), 3);
                assert!(members.contains(&member(2).gms_addr()));
            }
            other => panic!("expected a redirect, got {other:?}"),
        }
    }

    #[test]
    fn rule_3_a_members_id_is_refused_unless_it_is_that_joiner_asking_again() {
        let v = view(&[0, 1, 7], &[7]);
        assert_eq!(
            admit(&v, 0, PROTOCOL_VERSION, &member(7), &[], 8),
            Admission::SendView
        );
        // Another process with the joiner's id but other addresses.
        let mut other = member(7);
        other.gms_port += 1;
        assert_eq!(
            admit(&v, 0, PROTOCOL_VERSION, &other, &[], 8),
            Admission::Refuse(Refusal::IdInUse)
        );
        // A member that did not join with this view.
        assert_eq!(
            admit(&v, 0, PROTOCOL_VERSION, &member(1), &[], 8),
            Admission::Refuse(Refusal::IdInUse)
        );
    }

    #[test]
    fn rule_4_the_queue_is_bounded_but_a_queued_node_may_ask_again() {
        let v = view(&[0, 1], &[]);
        let queued: Vec<MemberInfo> = (10..12).map(member).collect();
        assert!(matches!(
            admit(&v, 0, PROTOCOL_VERSION, &member(7), &queued, 2),
            Admission::Refuse(Refusal::NotNow(_))
        ));
        assert_eq!(
            admit(&v, 0, PROTOCOL_VERSION, &member(11), &queued, 2),
            Admission::Queue
        );
        assert_eq!(
            admit(&v, 0, PROTOCOL_VERSION, &member(7), &queued, 3),
            Admission::Queue
        );
    }
}
