//! [`GroupBuilder`]: registers replicated types and starts a member.

use super::*;

/// Builds a [`Group`]: the replicated types, the layout, the callbacks.
pub struct GroupBuilder {
    pub(super) config: Config,
    pub(super) types: Vec<(String, TypeId, Factory, bool)>,
    pub(super) policy: Option<LayoutPolicy>,
    pub(super) on_view: Option<ViewHandler>,
    pub(super) timeout: Duration,
    pub(super) storage: Option<Arc<dyn derecho_persist::Storage>>,
}

impl std::fmt::Debug for GroupBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupBuilder")
            .field(
                "types",
                &self.types.iter().map(|t| &t.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl GroupBuilder {
    /// A group of this node, configured by `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            config: config.clone(),
            types: Vec::new(),
            policy: None,
            on_view: None,
            timeout: Duration::from_secs(60),
            storage: None,
        }
    }

    /// Registers replicated type `T` under `name` (the layout's type name); `factory` makes a
    /// fresh replica for subgroup `index` of the type.
    pub fn replicated<T: Replicated>(
        self,
        name: &str,
        factory: impl Fn(usize) -> T + Send + Sync + 'static,
    ) -> Self {
        self.register(name, factory, false)
    }

    /// Registers replicated type `T` under `name` like [`GroupBuilder::replicated`], and makes
    /// its subgroups **persistent**: every replica logs the updates it applies, with their
    /// versions and timestamps, under `[PERS] file_path`, takes checkpoints every
    /// `checkpoint_interval` updates, and is restored from its logs when the member restarts.
    /// `[PERS] durability` and `write_ahead_types` choose when an update reaches the disk.
    /// After every member of the group went down, the members restart from their logs (a
    /// total restart, see [`crate::gms::restart`]). Replies of updates offer
    /// [`ReplyMap::await_global_persistence`].
    pub fn persistent<T: Replicated>(
        self,
        name: &str,
        factory: impl Fn(usize) -> T + Send + Sync + 'static,
    ) -> Self {
        self.register(name, factory, true)
    }

    fn register<T: Replicated>(
        mut self,
        name: &str,
        factory: impl Fn(usize) -> T + Send + Sync + 'static,
        persistent: bool,
    ) -> Self {
        let f: Factory = Box::new(move |i| Arc::new(Holder(RwLock::new(factory(i)))));
        self.types
            .push((name.to_string(), TypeId::of::<T>(), f, persistent));
        self
    }

    /// The layout (default: the configuration's `[LAYOUT]` JSON layout applied to the types
    /// in registration order). Its types must be the registered ones, in the same order.
    pub fn layout(mut self, policy: LayoutPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// A callback for every installed view.
    pub fn on_view(mut self, h: impl FnMut(&View) + Send + 'static) -> Self {
        self.on_view = Some(Box::new(h));
        self
    }

    /// Where persistent subgroups keep their logs and the logged view, instead of a
    /// [`derecho_persist::FileStorage`] on `[PERS] file_path` (`[PERS] reset` then does not
    /// apply). A [`derecho_persist::SimStorage`] here lets a test crash a member's disk.
    pub fn storage(mut self, storage: Arc<dyn derecho_persist::Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// How long calls wait for answers (default 60 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Joins or starts the group and returns once this node is in an installed view.
    pub fn start(self) -> Result<Group, StartError> {
        let names: Vec<&str> = self.types.iter().map(|t| t.0.as_str()).collect();
        let policy = match self.policy {
            Some(p) => p,
            None => LayoutPolicy::from_config(&self.config, &names)?,
        };
        let declared: Vec<&str> = policy.types.iter().map(|t| t.name.as_str()).collect();
        if declared != names {
            return Err(StartError::TypesMismatch {
                declared: declared.iter().map(|d| d.to_string()).collect(),
                registered: names.iter().map(|n| n.to_string()).collect(),
            });
        }
        for (i, t) in self.types.iter().enumerate() {
            if self.types[..i].iter().any(|u| u.1 == t.1) {
                return Err(StartError::DuplicateType { name: t.0.clone() });
            }
        }
        let mut first = 0;
        let mut max_reply = Vec::new();
        let mut types = Vec::with_capacity(self.types.len());
        for ((name, type_id, factory, persistent), ty) in self.types.into_iter().zip(&policy.types)
        {
            let count = ty.subgroups.len();
            for sg in &ty.subgroups {
                let m = sg
                    .shards
                    .iter()
                    .filter_map(|s| self.config.profile(&s.profile))
                    .map(|p| usize::try_from(p.max_reply_payload_size).unwrap_or(usize::MAX))
                    .max()
                    .unwrap_or(usize::MAX);
                max_reply.push(m);
            }
            let durability = persistent.then(|| self.config.pers.durability_of(&name));
            types.push(TypeEntry {
                name,
                type_id,
                factory,
                first,
                count,
                durability,
            });
            first += count;
        }
        let d = &self.config.derecho;
        let limits = Limits {
            request: usize::try_from(d.max_p2p_request_payload_size).unwrap_or(usize::MAX),
            reply: usize::try_from(d.max_p2p_reply_payload_size).unwrap_or(usize::MAX),
            window: d.p2p_window_size.max(1) as usize,
        };
        let listener =
            TcpListener::bind(SocketAddr::new(d.local_ip, d.external_port)).map_err(|e| {
                StartError::io(
                    format!(
                        "binding the P2P port {}:{} ([DERECHO] external_port)",
                        d.local_ip, d.external_port
                    ),
                    e,
                )
            })?;
        let persistent = types.iter().any(|t| t.durability.is_some());
        // Loaded before the logs are touched, so a bad key stops the start cleanly.
        let signer = match persistent {
            true => self
                .config
                .signer()
                .map_err(|e| StartError::Config(Arc::new(e)))?,
            false => None,
        };
        let log_policy = persist::Policy::of(&self.config.pers).signed(signer);
        let persistence = match (persistent, self.storage) {
            (false, _) => None,
            (true, Some(storage)) => Some(Persistence::new(storage, log_policy)),
            (true, None) => Some(open_storage(&self.config.pers, log_policy)?),
        };
        if let Some(p) = &persistence {
            p.open_trim_log()?;
        }
        let restart = match &persistence {
            Some(p) => persist::restart_info(&p.storage, d.local_id, &types)?,
            None => None,
        };
        if let Some(r) = &restart {
            tracing::info!(vid = r.view.vid, shards = ?r.versions,
                "found a logged view: restarting from the logs");
        }
        let auth = Auth::of_member(&self.config)
            .map_err(|e| StartError::from(crate::GroupError::from(e)))?;
        let (tx, rx) = mpsc::sync_channel(REPLY_QUEUE);
        let inner = Arc::new(Inner {
            me: d.local_id,
            types,
            replicas: RwLock::new(HashMap::new()),
            view: RwLock::new(View::default()),
            pending: Mutex::new(HashMap::new()),
            replied: Condvar::new(),
            next_id: AtomicU64::new(1),
            peers: Peers::new(limits, auth.clone(), Role::P2p),
            replies_out: tx,
            max_reply,
            timeout: self.timeout,
            node: OnceLock::new(),
            on_view: Mutex::new(self.on_view),
            persistence,
        });
        let server = P2pServer::start(
            listener,
            d.local_id,
            Arc::new(Served(Arc::downgrade(&inner))),
            limits,
            auth.clone(),
        )?;
        let w = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name(format!("rpc-replies-{}", d.local_id))
            .spawn(move || reply_sender(&w, &rx))
            .map_err(|e| StartError::io("starting the reply sender", e))?;
        if inner.persistence.is_some() {
            let w = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name(format!("persist-{}", d.local_id))
                .spawn(move || persist::persist_worker(&w))
                .map_err(|e| StartError::io("starting the persist worker", e))?;
        }
        let layout = layout_from_policy(policy, &self.config)?;
        let (on_deliver, on_view) = (Arc::downgrade(&inner), Arc::downgrade(&inner));
        let node = GroupNode::start_authenticated(
            &self.config,
            auth,
            layout,
            Box::new(move |d| {
                if let Some(i) = on_deliver.upgrade() {
                    i.delivered(&d);
                }
            }),
            Hooks {
                on_view: Some(Box::new(move |v| {
                    if let Some(i) = on_view.upgrade() {
                        i.view_installed(v);
                    }
                })),
                state: Some(Arc::new(States(Arc::downgrade(&inner)))),
                restart,
                trim: inner.persistence.as_ref().map(|_| {
                    let w = Arc::downgrade(&inner);
                    Arc::new(move |vid: u64, t: &crate::multicast::RaggedTrim| {
                        if let Some(p) = w.upgrade().as_ref().and_then(|i| i.persistence.as_ref()) {
                            persist::log_trim(p, vid, t);
                        }
                    }) as crate::node::TrimHandler
                }),
            },
        )?;
        let node = Arc::new(node);
        // Set once, here, right after the node exists: it cannot be set already.
        let _ = inner.node.set(Arc::downgrade(&node));
        Ok(Group {
            inner,
            node,
            server: Mutex::new(server),
        })
    }
}

/// Opens `[PERS] file_path` (emptied first with `reset = true`).
fn open_storage(
    pers: &crate::config::PersSection,
    policy: persist::Policy,
) -> Result<Persistence, StartError> {
    let dir = &pers.file_path;
    if pers.reset && dir.exists() {
        tracing::warn!(dir = %dir.display(), "[PERS] reset: deleting the persistent logs");
        std::fs::remove_dir_all(dir)
            .map_err(|e| StartError::io(format!("emptying {} ([PERS] reset)", dir.display()), e))?;
    }
    let storage = derecho_persist::FileStorage::open(dir)
        .map_err(|e| StartError::from(derecho_persist::Error::from(e)))?;
    Ok(Persistence::new(Arc::new(storage), policy))
}
