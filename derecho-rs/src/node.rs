//! A group member process: configuration in, a running member out.
//!
//! [`GroupNode::start`] starts the fabric on `local_ip:sst_port`, listens on `gms_port`, forms
//! or joins the first view (the node whose `local_ip:gms_port` is the contact starts the
//! group), builds the view's multicast, and from then on delivers every message of its shards
//! to the delivery callback. Applications send raw messages with [`GroupNode::send`].
//!
//! When members fail, the view's change protocol (`gms/change.rs`) ends the view on the
//! core loop and hands the outcome to this member's **view manager** thread, which stops the
//! old view, builds the next one from the survivors (the layout runs again; survivors keep
//! their order), re-sends this member's messages that the ragged trim left undelivered, and
//! wakes senders that were waiting for the view to change. A member that is removed, or would
//! be in a minority, stops and says why. A next view the layout cannot provision is installed
//! without subgroups ([`View::inadequate`]): it runs the change protocol only, so failures and
//! joins go on being handled, and sends wait until a later view is adequate.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use derecho_fabric::backends;
use derecho_fabric::sync::{lock, wait_timeout};
use derecho_fabric::{Fabric, FabricError};
use derecho_sst::{Sst, SstConfig};

use crate::auth::Auth;
use crate::config::Config;
use crate::gms::change::Outcome;
use crate::gms::first_view::{self, LayoutFn};
use crate::gms::restart::RestartInfo;
use crate::gms::{manager, GmsError, GmsService, MemberInfo, View};
use crate::layout::{allocate, Assignment, LayoutError, LayoutPolicy, Shard};
use crate::multicast::{
    DeliveryHandler, MulticastConfig, MulticastError, MulticastGroup, Resend, ShardSpec, Sizes,
    SubgroupSpec,
};
use crate::NodeId;

/// Errors of starting or running a member.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// A thread the member needs could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A view was to be installed on a node that is not one of its members.
    #[error("view {vid} does not contain this node")]
    NotInView {
        /// The view.
        vid: u64,
    },
    /// The fabric could not start.
    #[error("fabric: {0}")]
    Fabric(#[from] FabricError),
    /// Membership failed.
    #[error("membership: {0}")]
    Gms(#[from] GmsError),
    /// Multicast failed.
    #[error("multicast: {0}")]
    Multicast(#[from] MulticastError),
    /// This member is no longer in the group (removed, in a minority, or the next view could
    /// not be formed); it has stopped.
    #[error("this member has left the group: {0}")]
    Stopped(StopReason),
    /// The credentials `[SECURITY]` names could not be loaded.
    #[error("credentials: {0}")]
    Credentials(#[from] derecho_fabric::secure::SecretError),
    /// Replica state could not be transferred.
    #[error(transparent)]
    Transfer(#[from] crate::gms::transfer::TransferError),
    /// A send waited for a view change longer than allowed.
    #[error("no view to send in within {0:?}")]
    Timeout(Duration),
    /// The current view cannot provision every shard (the layout's reason); the members wait
    /// for nodes to join.
    #[error("the current view is not adequately provisioned ({0}); waiting for nodes to join")]
    Inadequate(String),
}

/// Why a member stopped.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopReason {
    /// Other members suspected this one, and the view change removed it.
    #[error("other members suspect this one and removed it")]
    Evicted,
    /// It suspected so many members that it would have been in a minority (partition safety).
    #[error(
        "it suspects {suspected} of the {members} members and would be in a minority (partition safety)"
    )]
    Partitioned {
        /// Members it suspected.
        suspected: usize,
        /// Members of the view.
        members: usize,
    },
    /// The committed changes left it out of the next view.
    #[error("the view change removed this member")]
    Removed,
    /// The next view could not be set up here.
    #[error("installing view {vid} failed: {cause}")]
    InstallFailed {
        /// The view.
        vid: u64,
        /// What failed.
        #[source]
        cause: Arc<GroupError>,
    },
    /// [`GroupNode::abort`] was called.
    #[error("aborted")]
    Aborted,
    /// It left, or was shut down or dropped.
    #[error("shut down")]
    ShutDown,
    /// It has no view yet (or any more).
    #[error("no view installed")]
    NoView,
}

/// Reasons compare by kind and fields; two set-up failures of the same view compare by what
/// they say.
impl PartialEq for StopReason {
    fn eq(&self, other: &Self) -> bool {
        use StopReason as S;
        match (self, other) {
            (
                S::Partitioned { suspected, members },
                S::Partitioned {
                    suspected: s,
                    members: m,
                },
            ) => (suspected, members) == (s, m),
            (S::InstallFailed { vid, cause }, S::InstallFailed { vid: v, cause: c }) => {
                vid == v && cause.to_string() == c.to_string()
            }
            (S::Evicted, S::Evicted)
            | (S::Removed, S::Removed)
            | (S::Aborted, S::Aborted)
            | (S::ShutDown, S::ShutDown)
            | (S::NoView, S::NoView) => true,
            _ => false,
        }
    }
}

impl Eq for StopReason {}

/// Called with every view this member installs, on the view manager's thread, before any
/// message of that view is delivered.
pub type ViewHandler = Box<dyn FnMut(&View) + Send>;

pub use crate::gms::transfer::StateHooks;

/// Called with the ragged trim of view `vid` (subgroup → the last message index delivered per
/// sender) on the core loop, after every live member has agreed on it and before any message
/// it covers is delivered. The view change waits for it: a disk write and sync at most.
pub type TrimHandler = Arc<dyn Fn(u64, &crate::multicast::RaggedTrim) + Send + Sync>;

/// Optional upcalls of a member.
#[derive(Default)]
pub struct Hooks {
    /// Called with every installed view (see [`ViewHandler`]).
    pub on_view: Option<ViewHandler>,
    /// Saves and loads replica state when a view change moves members into shards.
    pub state: Option<Arc<dyn StateHooks>>,
    /// This node's report for a total restart, when its storage holds a logged view (see
    /// [`crate::gms::restart`]): a running group admits it as any joiner; a forming one
    /// restarts from the logs of a quorum of the last view.
    pub restart: Option<RestartInfo>,
    /// Called with every ragged trim before it is acted on (see [`TrimHandler`]).
    pub trim: Option<TrimHandler>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_view", &self.on_view.is_some())
            .field("state", &self.state.is_some())
            .field("trim", &self.trim.is_some())
            .field("restart", &self.restart.as_ref().map(|r| r.view.vid))
            .finish()
    }
}

/// The view manager's bounds, from `[DERECHO]` (each key's doc gives its meaning and default).
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// `view_change_setup_timeout_ms`.
    view_change_setup: Duration,
    /// `state_transfer_timeout_ms`.
    transfer: Duration,
    /// `resend_timeout_ms`.
    resend: Duration,
    /// `report_failure_timeout_ms`.
    report_failure: Duration,
    /// `leave_timeout_ms`.
    leave: Duration,
}

impl Bounds {
    fn of(d: &crate::config::DerechoSection) -> Self {
        use crate::config::ms;
        Bounds {
            view_change_setup: ms(d.view_change_setup_timeout_ms),
            transfer: ms(d.state_transfer_timeout_ms),
            resend: ms(d.resend_timeout_ms),
            report_failure: ms(d.report_failure_timeout_ms),
            leave: ms(d.leave_timeout_ms),
        }
    }
}

struct Current {
    view: View,
    group: Option<Arc<MulticastGroup>>,
    stopped: Option<StopReason>,
}

/// State shared by the member's handle and its view manager thread.
struct Inner {
    id: NodeId,
    fabric: Arc<dyn Fabric>,
    layout: LayoutFn,
    mc_config: MulticastConfig,
    partition_safety: bool,
    current: Mutex<Current>,
    changed: Condvar,
    deliver: Arc<Mutex<DeliveryHandler>>,
    on_view: Mutex<Option<ViewHandler>>,
    state: Option<Arc<dyn StateHooks>>,
    trim: Option<TrimHandler>,
    transfers: TcpListener,
    /// This member's credentials, for the connections it opens and accepts.
    auth: Auth,
    joins: crate::gms::change::JoinQueue,
    gms: Mutex<GmsService>,
    stopping: Arc<AtomicBool>,
    /// This member's messages that a ragged trim left undelivered and that no view has taken
    /// yet, oldest first. Each view takes them before the application may send in it, so a
    /// sender's messages keep their order across views; a view that wedges before taking
    /// them all leaves the rest to the next.
    owed: Mutex<Vec<Resend>>,
    bounds: Bounds,
}

/// A running member of a group.
pub struct GroupNode {
    inner: Arc<Inner>,
    manager: Mutex<Option<JoinHandle<()>>>,
    outcomes: Sender<Option<Outcome>>,
}

impl std::fmt::Debug for GroupNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupNode")
            .field("id", &self.inner.id)
            .field("vid", &self.view().vid)
            .finish_non_exhaustive()
    }
}

impl GroupNode {
    /// Starts a member from `config`; `layout` divides a member list into subgroups (or says
    /// why it does not suffice yet), `deliver` receives every delivered message.
    pub fn start(
        config: &Config,
        layout: LayoutFn,
        deliver: DeliveryHandler,
    ) -> Result<Self, GroupError> {
        Self::start_with(config, layout, deliver, None)
    }

    /// Like [`GroupNode::start`], with a callback for every installed view (the first
    /// included).
    pub fn start_with(
        config: &Config,
        layout: LayoutFn,
        deliver: DeliveryHandler,
        on_view: Option<ViewHandler>,
    ) -> Result<Self, GroupError> {
        Self::start_hooks(
            config,
            layout,
            deliver,
            Hooks {
                on_view,
                ..Hooks::default()
            },
        )
    }

    /// Like [`GroupNode::start`], with the view and state-transfer upcalls of `hooks`. A node
    /// that joins a running group receives the replica state of its shards before it delivers
    /// anything.
    pub fn start_hooks(
        config: &Config,
        layout: LayoutFn,
        deliver: DeliveryHandler,
        hooks: Hooks,
    ) -> Result<Self, GroupError> {
        let auth = Auth::of_member(config)?;
        Self::start_authenticated(config, auth, layout, deliver, hooks)
    }

    /// [`GroupNode::start_hooks`] with the member's credentials already loaded (the replicated
    /// objects' builder loads them once for its P2P port and the member).
    pub(crate) fn start_authenticated(
        config: &Config,
        auth: Auth,
        layout: LayoutFn,
        deliver: DeliveryHandler,
        hooks: Hooks,
    ) -> Result<Self, GroupError> {
        let d = &config.derecho;
        let me = MemberInfo {
            id: d.local_id,
            ip: d.local_ip,
            gms_port: d.gms_port,
            fabric_port: d.sst_port,
            state_transfer_port: d.state_transfer_port,
            external_port: d.external_port,
        };
        if auth.is_secure() {
            tracing::info!(
                id = d.local_id,
                mode = auth.credentials().mode(),
                "[SECURITY]: every connection is authenticated"
            );
        }
        let fabric = start_fabric_with(config, auth.credentials().clone())?;
        let listener = TcpListener::bind(SocketAddr::new(d.local_ip, d.gms_port)).map_err(|e| {
            GmsError::io(
                format!("binding the GMS port {}:{}", d.local_ip, d.gms_port),
                e,
            )
        })?;
        let transfers = TcpListener::bind(SocketAddr::new(d.local_ip, d.state_transfer_port))
            .map_err(|e| {
                GmsError::io(
                    format!(
                        "binding the state transfer port {}:{} ([DERECHO] state_transfer_port)",
                        d.local_ip, d.state_transfer_port
                    ),
                    e,
                )
            })?;
        let timeouts = d.gms_timeouts();
        let bounds = Bounds::of(d);
        let stop = AtomicBool::new(false);
        let leads = d.local_ip == d.contact_ip && d.gms_port == d.contact_port;
        // A contact node that restarts must not found a second group: it first asks the other
        // nodes of `restart_leaders` whether a group runs, and joins it if one does.
        // Left at its default (127.0.0.1:23580, the default contact), `restart_leaders` means
        // the contact itself: a contact elsewhere must not probe a port it was never told of
        // (another group may listen there, and this node would join it).
        let plain = crate::config::DerechoSection::default();
        let unset = d.restart_leaders == plain.restart_leaders
            && d.restart_leader_ports == plain.restart_leader_ports;
        let running = if leads && !unset {
            let me_addr = SocketAddr::new(d.local_ip, d.gms_port);
            let peers: Vec<SocketAddr> = d
                .restart_leaders
                .iter()
                .zip(&d.restart_leader_ports)
                .map(|(ip, port)| SocketAddr::new(*ip, *port))
                .filter(|a| *a != me_addr)
                .collect();
            first_view::find_running(&peers, &auth)
        } else {
            None
        };
        let backups = d.enable_backup_restart_leaders && !unset;
        let view = if let (true, Some(restart)) = (backups, hooks.restart.as_ref()) {
            let leaders: Vec<SocketAddr> = d
                .restart_leaders
                .iter()
                .zip(&d.restart_leader_ports)
                .map(|(ip, port)| SocketAddr::new(*ip, *port))
                .collect();
            first_view::restart_with_backups(
                &listener,
                &auth,
                me.clone(),
                &leaders,
                &layout,
                &timeouts,
                &stop,
                restart,
            )?
        } else if let Some((leader, vid)) = running {
            tracing::info!(id = d.local_id, %leader, vid,
                "this contact node finds its group running and joins it");
            first_view::join(leader, &auth, &me, &timeouts, &stop, hooks.restart.as_ref())?
        } else if leads {
            tracing::info!(id = d.local_id, "starting a new group as its first leader");
            first_view::lead(
                &listener,
                &auth,
                me.clone(),
                &layout,
                &timeouts,
                &stop,
                hooks.restart.as_ref(),
            )?
            .view
        } else {
            let contact = SocketAddr::new(d.contact_ip, d.contact_port);
            tracing::info!(id = d.local_id, %contact, "joining a group");
            first_view::join(
                contact,
                &auth,
                &me,
                &timeouts,
                &stop,
                hooks.restart.as_ref(),
            )?
        };
        let gms = GmsService::start(listener, auth.clone(), d.local_id, view.clone(), timeouts)?;
        let joins = gms.joins();
        let stopping = Arc::new(AtomicBool::new(false));
        let mc_config = MulticastConfig {
            setup_timeout: crate::config::ms(d.first_view_setup_timeout_ms),
            sst: SstConfig::default()
                .with_heartbeat_ms(u64::from(d.heartbeat_ms))
                .with_poll_cq_timeout_ms(u64::from(d.sst_poll_cq_timeout_ms)),
            cancel: Some(Arc::clone(&stopping)),
            failed_before_start: Vec::new(),
        };
        let inner = Arc::new(Inner {
            id: d.local_id,
            fabric,
            layout,
            mc_config,
            partition_safety: !d.disable_partitioning_safety,
            current: Mutex::new(Current {
                view: view.clone(),
                group: None,
                stopped: None,
            }),
            changed: Condvar::new(),
            deliver: Arc::new(Mutex::new(deliver)),
            on_view: Mutex::new(hooks.on_view),
            state: hooks.state,
            trim: hooks.trim,
            transfers,
            auth,
            joins,
            gms: Mutex::new(gms),
            stopping,
            owed: Mutex::new(Vec::new()),
            bounds,
        });
        let (tx, rx) = mpsc::channel();
        inner.install(view, &tx)?;
        let manager_inner = Arc::clone(&inner);
        let manager_tx = tx.clone();
        let manager = std::thread::Builder::new()
            .name(format!("views-{}", d.local_id))
            .spawn(move || manager_inner.manage(&rx, &manager_tx))
            .map_err(|source| GroupError::Spawn {
                what: "view manager",
                source,
            })?;
        Ok(Self {
            inner,
            manager: Mutex::new(Some(manager)),
            outcomes: tx,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The installed view.
    pub fn view(&self) -> View {
        lock(&self.inner.current).view.clone()
    }

    /// This node's multicast in the installed view, if that view is adequately provisioned.
    pub fn multicast(&self) -> Result<Arc<MulticastGroup>, GroupError> {
        let c = lock(&self.inner.current);
        match (&c.group, &c.stopped, &c.view.inadequate) {
            (_, Some(why), _) => Err(GroupError::Stopped(why.clone())),
            (Some(_), None, Some(why)) => Err(GroupError::Inadequate(why.clone())),
            (Some(g), None, None) => Ok(Arc::clone(g)),
            (None, None, _) => Err(GroupError::Stopped(StopReason::NoView)),
        }
    }

    /// The installed view's multicast, adequate or not (an inadequate view runs only the
    /// membership protocol).
    fn membership_group(&self) -> Result<Arc<MulticastGroup>, GroupError> {
        let c = lock(&self.inner.current);
        match (&c.group, &c.stopped) {
            (_, Some(why)) => Err(GroupError::Stopped(why.clone())),
            (Some(g), None) => Ok(Arc::clone(g)),
            (None, None) => Err(GroupError::Stopped(StopReason::NoView)),
        }
    }

    /// This node's multicast, waiting (until `deadline`) while a view change is installing the
    /// next view or while the installed view is not adequately provisioned.
    fn wait_multicast(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Arc<MulticastGroup>, GroupError> {
        self.wait_current(deadline, timeout, |c| {
            c.group.clone().filter(|_| c.view.is_adequate())
        })
    }

    /// Why this member stopped, if it has.
    pub fn stopped(&self) -> Option<StopReason> {
        lock(&self.inner.current).stopped.clone()
    }

    /// Waits until a view with id at least `vid` is installed, adequate or not (or the member
    /// stops, or `timeout` passes); returns the installed view.
    pub fn wait_for_view(&self, vid: u64, timeout: Duration) -> Result<View, GroupError> {
        let deadline = Instant::now() + timeout;
        self.wait_current(deadline, timeout, |c| {
            (c.view.vid >= vid && c.group.is_some()).then(|| c.view.clone())
        })
    }

    /// Waits (until `deadline`) for `ready` to find what it wants in the member's current
    /// state; fails at once if the member stops.
    fn wait_current<T>(
        &self,
        deadline: Instant,
        timeout: Duration,
        ready: impl Fn(&Current) -> Option<T>,
    ) -> Result<T, GroupError> {
        let mut c = lock(&self.inner.current);
        loop {
            if let Some(why) = &c.stopped {
                return Err(GroupError::Stopped(why.clone()));
            }
            if let Some(found) = ready(&c) {
                return Ok(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(GroupError::Timeout(timeout));
            }
            c = wait_timeout(&self.inner.changed, c, deadline - now);
        }
    }

    /// Sends `payload` in `subgroup` (this node must be one of its senders), waiting up to
    /// `timeout` for window space; a send that meets a view change waits for the next view
    /// and goes there. Returns the message's index in the view that took it.
    pub fn send(
        &self,
        subgroup: usize,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<i64, GroupError> {
        self.send_flags(subgroup, payload, 0, timeout)
    }

    /// Like [`GroupNode::send`] with header flags (bit 0 marks an ordered RPC).
    pub fn send_flags(
        &self,
        subgroup: usize,
        payload: &[u8],
        flags: u64,
        timeout: Duration,
    ) -> Result<i64, GroupError> {
        let deadline = Instant::now() + timeout;
        loop {
            let group = self.wait_multicast(deadline, timeout)?;
            let vid = group.spec().vid;
            let left = deadline.saturating_duration_since(Instant::now());
            match group.send_flags(subgroup, payload, flags, left) {
                Err(MulticastError::Wedged { .. }) => {
                    drop(group);
                    self.wait_for_view(
                        vid + 1,
                        deadline.saturating_duration_since(Instant::now()),
                    )?;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Leaves the group gracefully: tells every member (bounded by `timeout`), then stops. The
    /// others install a view without this member; partition safety does not count it as
    /// failed.
    pub fn leave(&self, timeout: Duration) -> Result<(), GroupError> {
        let told = self
            .membership_group()
            .and_then(|g| Ok(g.announce_leave(timeout)?));
        self.stop_all();
        told
    }

    /// Reports that `node` has failed (the application knows better than the timeouts): its
    /// row is frozen and the view changes without it.
    pub fn report_failure(&self, node: NodeId) -> Result<(), GroupError> {
        let bound = self.inner.bounds.report_failure;
        let g = self.wait_current(Instant::now() + bound, bound, |c| c.group.clone())?;
        g.sst().report_failure(node).map_err(MulticastError::from)?;
        Ok(())
    }

    /// Drops out of the group at once, without any protocol, as a crash would: the core loop
    /// stops and every link closes. For fault injection in tests and tools.
    pub fn abort(&self) {
        self.inner.stop_with(StopReason::Aborted);
    }

    /// Stops this member after a graceful leave (bounded by `[DERECHO] leave_timeout_ms`): the
    /// others
    /// install a view without it and do not count it as failed. [`GroupNode::abort`] stops
    /// without telling anyone.
    pub fn shutdown(self) {
        self.leave_quietly();
    }

    /// Leaves gracefully if this member is still in a view (bounded by `leave_timeout_ms`),
    /// then stops: the others remove it as a departure, not a failure, so partition safety does
    /// not count it against them.
    fn leave_quietly(&self) {
        if let Err(e) = self.leave(self.inner.bounds.leave) {
            // Stopped already, or the others did not take the announcement in time: they see
            // the links close instead, as after a crash.
            tracing::debug!(id = self.inner.id, error = %e, "stopping without a graceful leave");
        }
    }

    fn stop_all(&self) {
        // First make any view set-up in progress fail fast, then stop the manager.
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.fabric.shutdown();
        // The view manager may have stopped already (its receiver gone); then there is
        // nothing to wake, and joining it only waits for its end.
        let _ = self.outcomes.send(None);
        let manager = lock(&self.manager).take();
        if let Some(m) = manager {
            if m.join().is_err() {
                tracing::warn!(id = self.inner.id, "the view manager thread panicked");
            }
        }
        let group = {
            let mut c = lock(&self.inner.current);
            c.stopped.get_or_insert(StopReason::ShutDown);
            c.group.take()
        };
        if let Some(g) = group {
            g.stop();
        }
        lock(&self.inner.gms).stop();
        self.inner.fabric.shutdown();
        self.inner.changed.notify_all();
    }
}

impl Drop for GroupNode {
    /// Dropping a running member leaves the group gracefully, like [`GroupNode::shutdown`].
    fn drop(&mut self) {
        let running = lock(&self.manager).is_some();
        if running {
            self.leave_quietly();
        }
    }
}

impl Inner {
    /// Builds and starts the multicast of `view` with its change protocol, and makes it
    /// current.
    fn install(&self, view: View, outcomes: &Sender<Option<Outcome>>) -> Result<(), GroupError> {
        {
            // Views follow one another by one, and a view id has one membership.
            let c = lock(&self.current);
            debug_assert!(
                view.vid == c.view.vid + 1
                    || (view.vid == c.view.vid && view.ids() == c.view.ids()),
                "installing view {} {:?} after view {} {:?}",
                view.vid,
                view.ids(),
                c.view.vid,
                c.view.ids()
            );
        }
        // The first view may wait for slow starters (every process starts at once); a later
        // one gives up sooner, so that members of it that died are found and left out.
        let mut config = self.mc_config.clone();
        if view.vid > 0 {
            config.setup_timeout = self.bounds.view_change_setup;
            // A member carried over from the previous view whose link has failed since is
            // gone: its row starts frozen at once (the view's change protocol removes it)
            // rather than after the set-up bound. A joiner's link may be a failed one of an
            // earlier process with its id; the joiner replaces it when it links.
            config.failed_before_start = view
                .members
                .iter()
                .filter(|m| m.id != self.id && !view.joined.contains(&m.id))
                .filter(|m| {
                    self.fabric
                        .link(m.id)
                        .is_some_and(|l| l.failure().is_some())
                })
                .map(|m| m.id)
                .collect();
        }
        let spec = view
            .multicast_spec(self.id)
            .ok_or(GroupError::NotInView { vid: view.vid })?;
        // The view upcall comes before anything of the view can be delivered.
        if let Some(h) = lock(&self.on_view).as_mut() {
            h(&view);
        }
        let shared = Arc::clone(&self.deliver);
        let deliver: DeliveryHandler = Box::new(move |d| (lock(&shared))(d));
        // Replica state moves once every member is at the view's start barrier, with
        // heartbeats running and before anything is delivered: a long transfer holds up only
        // the shards that wait for it, and nobody takes its members for failed.
        let group =
            MulticastGroup::new_with(Arc::clone(&self.fabric), spec, config, deliver, |sst| {
                let started = Instant::now();
                self.exchange_state(&view, sst)?;
                if !view.transfers.is_empty() {
                    tracing::debug!(vid = view.vid, after = ?started.elapsed(), "states exchanged");
                }
                Ok::<(), GroupError>(())
            })?;
        let tx = outcomes.clone();
        let vid = view.vid;
        let on_trim = self.trim.as_ref().map(|f| {
            let f = Arc::clone(f);
            Arc::new(move |t: &crate::multicast::RaggedTrim| f(vid, t)) as crate::multicast::TrimLog
        });
        group.install_change_protocol(
            self.partition_safety,
            Some(Arc::clone(&self.joins)),
            Box::new(move |o| {
                // A member that stopped has no view manager to tell.
                let _ = tx.send(Some(o));
            }),
            on_trim,
        )?;
        lock(&self.gms).set_join_bell(Some(group.doorbell()));
        match &view.inadequate {
            None => {
                tracing::info!(vid = view.vid, members = ?view.ids(), "view installed");
                self.send_owed(&group, view.vid);
            }
            // Nothing is sent in it: the owed messages wait for an adequate view.
            Some(why) => tracing::warn!(vid = view.vid, members = ?view.ids(), reason = %why,
                "inadequate view installed: every shard waits for more nodes to join"),
        }
        lock(&self.gms).set_view(view.clone());
        {
            let mut c = lock(&self.current);
            c.view = view;
            c.group = Some(Arc::new(group));
        }
        self.changed.notify_all();
        Ok(())
    }

    fn stop_with(&self, why: StopReason) {
        tracing::warn!(id = self.id, reason = %why, "this member stops");
        let group = {
            let mut c = lock(&self.current);
            c.stopped = Some(why);
            c.group.take()
        };
        if let Some(g) = group {
            g.stop();
        }
        self.fabric.shutdown();
        self.changed.notify_all();
    }

    /// The view manager: turns each view's outcome into the next view
    /// ([`crate::gms::manager::after`] decides; this carries it out).
    fn manage(&self, outcomes: &Receiver<Option<Outcome>>, tx: &Sender<Option<Outcome>>) {
        while let Ok(Some(outcome)) = outcomes.recv() {
            let ended = Instant::now();
            let old_view = lock(&self.current).view.clone();
            let step = manager::after(&old_view, self.id, &outcome, &self.layout);
            let (next, removed) = match step {
                manager::Step::Stop(why) => {
                    self.stop_with(why);
                    return;
                }
                manager::Step::Next { view, cut_off } => (view, cut_off),
            };
            if let Outcome::Trimmed { resend, .. } = outcome {
                tracing::debug!(?removed, resend = resend.len(), "view ended");
                let mut owed = lock(&self.owed);
                let earlier = std::mem::take(&mut *owed);
                *owed = manager::owed_after_trim(resend, earlier);
            }
            let old_group = lock(&self.current).group.take();
            if let Some(g) = old_group {
                g.stop();
            }
            // A removed member that is still running (suspected wrongly, or reported by the
            // application) must learn it is out: cut it off, so it finds itself alone and
            // stops instead of waiting in the old view. This happens before the joiners are
            // welcomed: a node restarted with a removed member's id links anew after its
            // welcome, and that new link must stay up.
            for id in &removed {
                if let Some(link) = self.fabric.link(*id) {
                    link.fail("removed from the group");
                }
            }
            {
                let gms = lock(&self.gms);
                gms.set_view(next.clone());
                gms.welcome(&next);
            }
            // Members of the next view that died since it was decided do not stop its set-up:
            // their rows start frozen, and the view's change protocol removes them with the
            // agreement of the others (never by a local guess).
            let vid = next.vid;
            if let Err(e) = self.install(next, tx) {
                self.stop_with(StopReason::InstallFailed {
                    vid,
                    cause: Arc::new(e),
                });
                return;
            }
            tracing::debug!(after = ?ended.elapsed(), "next view running");
        }
    }

    /// Sends the owed messages in a view that is not yet current (the application cannot
    /// send in it yet), oldest first. Stops at the first one the view does not take: if the
    /// view has wedged, that one and the rest wait for the next view.
    fn send_owed(&self, group: &MulticastGroup, vid: u64) {
        let mut owed = lock(&self.owed);
        let mut sent = 0;
        for r in owed.iter() {
            match resend_one(group, r, self.bounds.resend) {
                Ok(()) => sent += 1,
                Err(MulticastError::Wedged { .. }) => break,
                Err(e) => {
                    // Not taken and not because of a view change (the window stayed full for
                    // the whole bound): keep it and the rest for the next view, which the
                    // stall will bring.
                    tracing::warn!(vid, error = %e, "a message of an ended view waits for the next view");
                    break;
                }
            }
        }
        owed.drain(..sent);
        if !owed.is_empty() {
            tracing::debug!(
                vid,
                left = owed.len(),
                "messages of ended views wait for the next view"
            );
        }
    }
}

impl Inner {
    /// Sends the states this member owes the view's newcomers and receives the ones it is
    /// owed, after the view's start barrier and before its core loop runs. A transfer whose
    /// other end has failed in this view (its row is frozen) is abandoned at once.
    fn exchange_state(&self, view: &View, sst: &Arc<Sst>) -> Result<(), GroupError> {
        let mut sends = Vec::new();
        for t in view.transfers.iter().filter(|t| t.from == self.id) {
            for to in &t.to {
                let Some(m) = view.members.iter().find(|m| m.id == *to) else {
                    continue;
                };
                let addr = SocketAddr::new(m.ip, m.state_transfer_port);
                let (vid, subgroup, hooks) = (view.vid, t.subgroup, self.state.clone());
                let bound = self.bounds.transfer;
                let to = *to;
                let sst = Arc::clone(sst);
                let auth = self.auth.clone();
                sends.push(std::thread::spawn(move || {
                    let give_up = || failed_in(&sst, to);
                    let r = crate::gms::transfer::send(
                        &auth,
                        (to, addr),
                        vid,
                        subgroup,
                        hooks.as_deref(),
                        bound,
                        &give_up,
                    );
                    (to, r)
                }));
            }
        }
        let from: Vec<NodeId> = view
            .transfers
            .iter()
            .filter(|t| t.to.contains(&self.id))
            .map(|t| t.from)
            .collect();
        let give_up = || from.iter().find_map(|&f| failed_in(sst, f));
        let received = receive_state(
            &self.auth,
            &self.transfers,
            self.id,
            view,
            self.state.as_deref(),
            self.bounds.transfer,
            &give_up,
        );
        for s in sends {
            match s.join() {
                Ok((_, Ok(()))) => {}
                // The receiver failed: the next view change removes it.
                Ok((to, Err(e))) => tracing::warn!(to, error = %e, "a state transfer failed"),
                Err(_) => tracing::warn!("a state transfer thread panicked"),
            }
        }
        received
    }
}

/// Why a transfer with `peer` should stop: its row in the view's SST is frozen (it failed).
fn failed_in(sst: &Sst, peer: NodeId) -> Option<String> {
    let rank = sst.rank_of(peer)?;
    sst.is_frozen(rank)
        .then(|| format!("node {peer} failed during the transfer"))
}

/// Receives the states `view` transfers to `me`, waiting up to `bound` for them or until
/// `give_up` says a sender failed.
fn receive_state(
    auth: &Auth,
    listener: &TcpListener,
    me: NodeId,
    view: &View,
    hooks: Option<&dyn StateHooks>,
    bound: Duration,
    give_up: &dyn Fn() -> Option<String>,
) -> Result<(), GroupError> {
    let expected: Vec<usize> = view
        .transfers
        .iter()
        .filter(|t| t.to.contains(&me))
        .map(|t| t.subgroup)
        .collect();
    crate::gms::transfer::receive(auth, listener, view.vid, expected, hooks, bound, give_up)
        .map_err(GroupError::from)
}

/// Starts the fabric backend the `[RDMA]` section names, listening on `local_ip:sst_port`.
/// A backend this build does not include is an error naming `[RDMA] backend`.
pub fn start_fabric(config: &Config) -> Result<Arc<dyn Fabric>, GroupError> {
    start_fabric_with(config, config.credentials()?)
}

/// [`start_fabric`] with credentials already loaded.
fn start_fabric_with(
    config: &Config,
    credentials: derecho_fabric::secure::Credentials,
) -> Result<Arc<dyn Fabric>, GroupError> {
    let r = &config.rdma;
    let settings = backends::RdmaSettings {
        backend: r.backend.as_str().to_string(),
        provider: r.provider.clone(),
        domain: r.domain.clone(),
        tx_depth: r.tx_depth,
        rx_depth: r.rx_depth,
        shm_dir: None,
    };
    let listen = SocketAddr::new(config.derecho.local_ip, config.derecho.sst_port);
    let mut chosen =
        backends::BackendConfig::from_rdma(&settings, config.derecho.local_id, listen)?;
    chosen.set_credentials(credentials);
    Ok(backends::start(chosen)?)
}

/// Sends one owed message in `g`, waiting up to `bound` for window space.
fn resend_one(g: &MulticastGroup, r: &Resend, bound: Duration) -> Result<(), MulticastError> {
    let deadline = Instant::now() + bound;
    loop {
        if g.try_send_flags(r.subgroup, &r.payload, r.flags)?.is_some() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MulticastError::WindowFull {
                subgroup: r.subgroup,
                after: bound,
            });
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A [`LayoutFn`] that allocates `policy` over a member list and takes each shard's message
/// sizes from the configuration profile the shard names.
pub fn layout_from_policy(policy: LayoutPolicy, config: &Config) -> Result<LayoutFn, LayoutError> {
    policy.check_profiles(config)?;
    let profiles: std::collections::BTreeMap<String, Sizes> = config
        .subgroups
        .iter()
        .map(|(name, p)| (name.clone(), Sizes::from_profile(p)))
        .collect();
    // Survivors keep their shards: the previous view's shards are the previous assignment.
    Ok(Arc::new(move |ids: &[NodeId], previous: Option<&View>| {
        let before = previous.and_then(|v| assignment_of_view(&policy, v).map(|a| (a, v.ids())));
        let assignment = allocate(
            &policy,
            ids,
            before.as_ref().map(|(a, m)| (a, m.as_slice())),
        )?;
        specs_of(&assignment, &profiles)
    }))
}

/// The assignment a view was built from, recovered with the policy's type names and profiles;
/// `None` if the view does not have the policy's shape.
pub fn assignment_of_view(policy: &LayoutPolicy, view: &View) -> Option<Assignment> {
    let mut flat = view.subgroups.iter();
    let mut types = Vec::with_capacity(policy.types.len());
    for ty in &policy.types {
        let mut subgroups = Vec::with_capacity(ty.subgroups.len());
        for sg in &ty.subgroups {
            let spec = flat.next()?;
            if spec.shards.len() != sg.shards.len() {
                return None;
            }
            let shards = spec
                .shards
                .iter()
                .zip(&sg.shards)
                .map(|(s, p)| {
                    let is_sender = s.members.iter().map(|m| s.senders.contains(m)).collect();
                    Shard::new(s.members.clone(), is_sender, s.mode, p.profile.clone()).ok()
                })
                .collect::<Option<Vec<_>>>()?;
            subgroups.push(shards);
        }
        types.push((ty.name.clone(), subgroups));
    }
    Assignment::from_parts(types).ok()
}

/// The multicast description of an assignment, each shard's sizes taken from the profile it
/// names (or `DEFAULT`). Errors: [`LayoutError::Profile`] when neither is in `profiles`.
pub fn specs_of(
    assignment: &Assignment,
    profiles: &std::collections::BTreeMap<String, Sizes>,
) -> Result<Vec<SubgroupSpec>, LayoutError> {
    assignment
        .subgroups()
        .map(|(_, shards)| {
            let shards = shards
                .iter()
                .map(|s| {
                    let sizes = profiles
                        .get(s.profile())
                        .or_else(|| profiles.get("DEFAULT"))
                        .cloned()
                        .ok_or_else(|| LayoutError::Profile {
                            profile: s.profile().to_string(),
                            at: None,
                            problem: "no such profile and no DEFAULT".into(),
                        })?;
                    Ok(ShardSpec {
                        members: s.members().to_vec(),
                        senders: s.senders().collect(),
                        mode: s.mode(),
                        sizes,
                    })
                })
                .collect::<Result<Vec<_>, LayoutError>>()?;
            Ok(SubgroupSpec { shards })
        })
        .collect()
}
