//! RDMC: reliable multicast of large messages.
//!
//! A message above the small-message limit is cut into blocks and spread from its sender to the
//! other members of a sender-rooted group by a schedule (binomial pipeline by default, or chain,
//! sequential or tree). Schedules are pure functions of (group size, rank, block count,
//! algorithm); the transfer engine runs them over one-sided writes with immediate notifications
//! from [`derecho_fabric`], keeps a bounded number of blocks in flight, and reports completion or
//! the failure of a peer.
//!
//! [`schedule`] holds the schedules, [`RdmcGroup`] the transfer engine of one sender-rooted group. It must not know about
//! views or ordering: the multicast layer in `derecho` decides what to send and when.
#![forbid(unsafe_code)]

mod group;
pub mod layout;
pub mod schedule;
mod set;

pub use group::{
    GroupSpec, GroupSpecError, Handler, Message, Prepared, ProtocolError, RdmcError, RdmcGroup,
};
pub use layout::{MAX_BLOCKS_PER_MESSAGE, MAX_GROUP_ID, MAX_WINDOW};
pub use set::{GroupKey, GroupPlan, GroupSet, PreparedSet};

pub use schedule::{
    Algorithm, FirstBlock, ParseAlgorithmError, Participant, Schedule, ScheduleError, Step,
    Transfer,
};
