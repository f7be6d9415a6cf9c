//! Helpers for testing code built on this crate: a check of a user's [`Replicated`] type,
//! and configurations for members on `127.0.0.1`.
//!
//! [`check_replicated`] does for a replicated type what the group relies on without being
//! able to verify at run time: updates, queries and replies survive the wire encoding,
//! applying the same updates to two fresh replicas gives the same replies (determinism), and a
//! replica loaded from another's saved state answers every query as the original does (state
//! transfer).
//!
//! With the crate's `testing` feature, `membership` also exposes the membership core's pure
//! decisions and the view-change hook of the multicast layer, for simulators and protocol
//! tests that drive them directly. Applications do not need it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, TcpListener};

use crate::config::Config;
use crate::rpc::{wire, Replicated};
use crate::NodeId;

/// The membership core and the multicast layer's view-change hook, for simulators and protocol
/// tests (the `testing` feature).
#[cfg(feature = "testing")]
pub mod membership {
    pub use crate::gms::admission::{admit, Admission};
    pub use crate::gms::change::{JoinQueue, Outcome};
    pub use crate::gms::manager::{after, owed_after_trim, Step};

    use crate::multicast::{MulticastError, MulticastGroup};

    /// Starts a view's change protocol on a bare [`MulticastGroup`], as a member does when it
    /// installs the view.
    pub trait ChangeProtocol {
        /// Starts the view-change protocol of this view on its core loop: suspicions,
        /// proposals, wedging and the ragged trim; on the leader, `joins` holds the nodes
        /// waiting to join. `on_outcome` is called once, on the core loop's thread, when the
        /// view has ended on this member; it must not block.
        fn install_change_protocol(
            &self,
            partition_safety: bool,
            joins: Option<JoinQueue>,
            on_outcome: Box<dyn FnMut(Outcome) + Send>,
        ) -> Result<(), MulticastError>;
    }

    impl ChangeProtocol for MulticastGroup {
        fn install_change_protocol(
            &self,
            partition_safety: bool,
            joins: Option<JoinQueue>,
            on_outcome: Box<dyn FnMut(Outcome) + Send>,
        ) -> Result<(), MulticastError> {
            MulticastGroup::install_change_protocol(self, partition_safety, joins, on_outcome, None)
        }
    }
}

/// Why a replicated type failed [`check_replicated`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// A value does not survive encoding and decoding.
    #[error("{what} #{index} does not survive the wire encoding: {detail}")]
    Encoding {
        /// Update, query or reply.
        what: &'static str,
        /// Its position in the input.
        index: usize,
        /// What went wrong.
        detail: String,
    },
    /// Two fresh replicas gave different replies to the same sequence of updates or queries.
    #[error("two replicas answered {what} #{index} differently: the type is not deterministic")]
    NotDeterministic {
        /// Update or query.
        what: &'static str,
        /// Its position in the input.
        index: usize,
    },
    /// Saving the state of a replica failed.
    #[error("state transfer: saving: {message}")]
    SaveFailed {
        /// The kind of the I/O error.
        kind: io::ErrorKind,
        /// The I/O error's message.
        message: String,
    },
    /// Loading a fresh replica from the saved state failed.
    #[error("state transfer: loading: {message}")]
    LoadFailed {
        /// The kind of the I/O error.
        kind: io::ErrorKind,
        /// The I/O error's message.
        message: String,
    },
    /// A replica loaded from another's state answered a query differently.
    #[error("state transfer: the loaded replica answers query #{index} differently")]
    LoadedReplicaDiffers {
        /// The query's position in the input.
        index: usize,
    },
}

/// Encodes `value` and decodes it again, returning the encoding (what travels).
fn round_trip<V: serde::Serialize + serde::de::DeserializeOwned>(
    value: &V,
    what: &'static str,
    index: usize,
) -> Result<Vec<u8>, CheckError> {
    let err = |detail: String| CheckError::Encoding {
        what,
        index,
        detail,
    };
    let bytes = wire::encode(value).map_err(|e| err(e.to_string()))?;
    let back: V = wire::decode(&bytes).map_err(|e| err(e.to_string()))?;
    let again = wire::encode(&back).map_err(|e| err(e.to_string()))?;
    if again != bytes {
        return Err(err("decoding and encoding again gives other bytes".into()));
    }
    Ok(bytes)
}

/// Checks a replicated type on `updates` and `queries`: every value round-trips through the
/// wire encoding; two replicas made by `fresh` reply identically to each update (applied in
/// order) and then to each query; and a third replica loaded from the first one's saved state
/// answers every query as the first does. Replies are compared by their encoding.
pub fn check_replicated<T: Replicated>(
    fresh: impl Fn() -> T,
    updates: &[T::Update],
    queries: &[T::Query],
) -> Result<(), CheckError> {
    let (mut a, mut b) = (fresh(), fresh());
    for (i, u) in updates.iter().enumerate() {
        let bytes = round_trip(u, "update", i)?;
        // Each replica applies its own decoded copy, as members do.
        let (ua, ub): (T::Update, T::Update) = (decode(&bytes)?, decode(&bytes)?);
        let ra = round_trip(&a.apply(ua), "reply", i)?;
        let rb = round_trip(&b.apply(ub), "reply", i)?;
        if ra != rb {
            return Err(CheckError::NotDeterministic {
                what: "update",
                index: i,
            });
        }
    }
    let mut saved = Vec::new();
    a.save(&mut saved).map_err(|e| CheckError::SaveFailed {
        kind: e.kind(),
        message: e.to_string(),
    })?;
    let mut c = fresh();
    c.load(&mut saved.as_slice())
        .map_err(|e| CheckError::LoadFailed {
            kind: e.kind(),
            message: e.to_string(),
        })?;
    for (i, q) in queries.iter().enumerate() {
        let bytes = round_trip(q, "query", i)?;
        let answer = |r: &T| -> Result<Vec<u8>, CheckError> {
            round_trip(&r.query(decode(&bytes)?), "reply", i)
        };
        let ra = answer(&a)?;
        if ra != answer(&b)? {
            return Err(CheckError::NotDeterministic {
                what: "query",
                index: i,
            });
        }
        if ra != answer(&c)? {
            return Err(CheckError::LoadedReplicaDiffers { index: i });
        }
    }
    Ok(())
}

fn decode<V: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<V, CheckError> {
    wire::decode(bytes).map_err(|e| CheckError::Encoding {
        what: "value",
        index: 0,
        detail: e.to_string(),
    })
}

/// A port on 127.0.0.1 that the OS reports free now (another process may take it before it
/// is bound again; good enough for tests and examples on one machine).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A configuration for member `id` on 127.0.0.1 with free ports and a 50 ms heartbeat. With
/// `contact` = `None` the member is the contact and starts the group; otherwise it joins the
/// group whose contact listens on GMS port `contact`.
pub fn local_config(id: NodeId, contact: Option<u16>) -> std::io::Result<Config> {
    let mut c = Config::default();
    let d = &mut c.derecho;
    d.local_id = id;
    d.local_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    d.contact_ip = d.local_ip;
    d.gms_port = free_port()?;
    d.contact_port = contact.unwrap_or(d.gms_port);
    d.sst_port = free_port()?;
    d.state_transfer_port = free_port()?;
    d.external_port = free_port()?;
    d.heartbeat_ms = 50;
    Ok(c)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Read, Write};

    use super::*;

    /// A counter; `flaky` makes every replica answer with its own address (not deterministic)
    /// and `lossy` saves nothing (state transfer loses the count).
    struct Counter {
        n: i64,
        flaky: bool,
        lossy: bool,
    }

    impl Replicated for Counter {
        type Update = i64;
        type Query = ();
        type Reply = i64;
        fn apply(&mut self, add: i64) -> i64 {
            self.n += add;
            if self.flaky {
                std::ptr::from_ref(self) as i64
            } else {
                self.n
            }
        }
        fn query(&self, (): ()) -> i64 {
            self.n
        }
        fn save(&self, out: &mut dyn Write) -> std::io::Result<()> {
            if self.lossy {
                return Ok(());
            }
            out.write_all(&self.n.to_le_bytes())
        }
        fn load(&mut self, input: &mut dyn Read) -> std::io::Result<()> {
            let mut b = [0u8; 8];
            if self.lossy {
                return Ok(());
            }
            input.read_exact(&mut b)?;
            self.n = i64::from_le_bytes(b);
            Ok(())
        }
    }

    fn counter(flaky: bool, lossy: bool) -> impl Fn() -> Counter {
        move || Counter { n: 0, flaky, lossy }
    }

    #[test]
    fn a_sound_type_passes() {
        check_replicated(counter(false, false), &[1, 2, 3], &[()]).unwrap();
    }

    #[test]
    fn a_type_whose_replies_differ_between_replicas_fails() {
        assert_eq!(
            check_replicated(counter(true, false), &[1], &[()]),
            Err(CheckError::NotDeterministic {
                what: "update",
                index: 0
            })
        );
    }

    #[test]
    fn a_type_that_loses_state_in_transfer_fails() {
        assert_eq!(
            check_replicated(counter(false, true), &[5], &[()]),
            Err(CheckError::LoadedReplicaDiffers { index: 0 })
        );
    }

    /// A counter that saves its state but cannot read it back.
    struct Unloadable(Counter);

    impl Replicated for Unloadable {
        type Update = i64;
        type Query = ();
        type Reply = i64;
        fn apply(&mut self, add: i64) -> i64 {
            self.0.apply(add)
        }
        fn query(&self, (): ()) -> i64 {
            self.0.query(())
        }
        fn save(&self, out: &mut dyn Write) -> std::io::Result<()> {
            self.0.save(out)
        }
        fn load(&mut self, _: &mut dyn Read) -> std::io::Result<()> {
            Err(io::Error::new(io::ErrorKind::InvalidData, "unreadable"))
        }
    }

    #[test]
    fn a_type_whose_state_does_not_load_fails() {
        let fresh = || Unloadable(counter(false, false)());
        let err = check_replicated(fresh, &[5], &[()]).unwrap_err();
        assert_eq!(
            err,
            CheckError::LoadFailed {
                kind: io::ErrorKind::InvalidData,
                message: "unreadable".into()
            }
        );
        assert_eq!(err.to_string(), "state transfer: loading: unreadable");
    }
}
