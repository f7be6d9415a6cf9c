//! Persistent subgroups: the replicas of a type registered with
//! [`GroupBuilder::persistent`](super::GroupBuilder::persistent) keep, on disk under
//! `[PERS] file_path`, every update they apply as a versioned log entry (version
//! `vid << 32 | seq`, timestamp = the caller's clock, so replicas write identical logs) and,
//! every `checkpoint_interval` updates, a checkpoint of the whole object
//! ([`Replicated::save`]). A replica is restored from its newest checkpoint plus the updates
//! after it; a replica that receives a shard's state by transfer replaces its logs with one
//! checkpoint at the version it received.
//!
//! A persist worker syncs the logs in batches (one sync covers every update appended before
//! it) and publishes each replica's newest persisted version in the view's SST
//! (`persisted_num`); the minimum over a shard is its **global persistence frontier**, which
//! [`ReplyMap::await_global_persistence`](super::ReplyMap::await_global_persistence) waits on.
//!
//! Durability (`[PERS] durability`, `write_ahead_types`): *write-behind* applies an update and
//! then logs it; after a total crash only versions at or below the global frontier are sure to
//! survive. *Write-ahead* logs and syncs an update before applying it, so every update a member
//! applied is on its own disk; a total restart restores every update applied by any member of
//! the restart quorum.
//!
//! Signed logs (`[PERS] signed_logs`): both logs of every persistent replica are opened with
//! the member's signing key, so every update and checkpoint entry carries an Ed25519
//! signature chained to the one before it (see [`derecho_persist::sign`]); anyone with the
//! public key can check a replica's log with [`Log::verify`]. The logged view and the ragged
//! trims are not signed.
//!
//! This module owns the replica logs and the persist worker; the restart decisions are
//! [`crate::gms::restart`]'s, and the versions a restarting node reports are read here.

use derecho_persist::{
    field_name, load_object, save_object, Hlc, Log, LogOptions, Signer, Storage, Version, INVALID,
};

use super::*;
use crate::config::{Durability, PersSection};
use crate::gms::restart::{RestartInfo, ShardVersion};

/// Log entry kind of an applied update.
const KIND_UPDATE: u8 = 1;
/// Log entry kind of a checkpoint (the whole object).
const KIND_CHECKPOINT: u8 = 2;
/// Name of the logged view.
pub(super) const VIEW_OBJECT: &str = "view";
/// Name of the log of ragged trims: one entry per ended view, its version the view's id.
pub const TRIM_LOG: &str = "trims";
/// Log entry kind of a ragged trim.
const KIND_TRIM: u8 = 3;
/// Trims kept at least; at twice as many the older ones are dropped in one batch (a restart
/// needs none of them today).
const TRIMS_KEPT: usize = 1024;

/// The `[PERS]` settings a replica log follows.
#[derive(Clone, Debug)]
pub(super) struct Policy {
    checkpoint_interval: u64,
    checkpoint_bytes: u64,
    max_entries: u64,
    max_bytes: u64,
    /// The key replica logs are signed with (`[PERS] signed_logs`).
    signer: Option<Arc<Signer>>,
}

impl Policy {
    /// The policy of `p`, without a signing key (see [`Policy::signed`]).
    pub(super) fn of(p: &PersSection) -> Self {
        Self {
            checkpoint_interval: p.checkpoint_interval.max(1),
            checkpoint_bytes: p.checkpoint_bytes.max(1),
            max_entries: p.max_log_entry.max(1),
            max_bytes: p.max_data_size.max(1),
            signer: None,
        }
    }

    /// The same policy, signing replica logs with `signer`.
    pub(super) fn signed(self, signer: Option<Arc<Signer>>) -> Self {
        Self { signer, ..self }
    }
}

/// Why a replica could not be restored from its logs.
#[derive(Debug, thiserror::Error)]
pub(super) enum RestoreError {
    /// A log could not be read.
    #[error(transparent)]
    Log(#[from] derecho_persist::Error),
    /// The replica refused its checkpoint.
    #[error("loading the checkpoint of version {version}: {source}")]
    Load {
        version: Version,
        #[source]
        source: io::Error,
    },
}

/// The logs of one persistent replica: its updates and its checkpoints.
pub(super) struct ReplicaLog {
    updates: Log,
    checkpoints: Log,
    /// Updates appended since the newest checkpoint.
    since_checkpoint: AtomicU64,
    /// Their bytes.
    bytes_since_checkpoint: AtomicU64,
    /// The size of the newest checkpoint.
    checkpoint_len: AtomicU64,
    /// Updates recorded since the last checkpoint attempt, and how many must pass before the
    /// next one: 0 normally, `checkpoint_interval` after a failed attempt, so that a full disk
    /// does not cost a save of the whole object at every update.
    since_attempt: AtomicU64,
    attempt_gap: AtomicU64,
    /// An update could not be logged: later ones are not appended (the log must have no
    /// hole), and the next checkpoint that succeeds repairs it.
    broken: std::sync::atomic::AtomicBool,
    /// Updates recorded but not yet written to the log: written in one storage write per
    /// batch (by the persist worker, or here once [`PENDING_ENTRIES`] or [`PENDING_BYTES`]
    /// are reached).
    pending: Mutex<Pending>,
    policy: Policy,
    /// When updates reach the disk relative to their delivery.
    pub(super) durability: Durability,
}

/// Most updates a replica log buffers before it writes them itself.
const PENDING_ENTRIES: usize = 512;
/// Most update bytes a replica log buffers before it writes them itself.
const PENDING_BYTES: usize = 1 << 20;

/// Updates at least this large are written at once instead of buffered.
const LARGE_UPDATE: usize = 64 << 10;

/// Updates waiting to be written: (version, timestamp, update bytes).
#[derive(Default)]
struct Pending {
    entries: Vec<(Version, Hlc, Vec<u8>)>,
    bytes: usize,
}

/// The log names of a replica of subgroup `index` of type `type_name`, shard `shard`.
fn names(type_name: &str, index: usize, shard: usize) -> (String, String) {
    let (i, s) = (
        u32::try_from(index).unwrap_or(u32::MAX),
        u32::try_from(shard).unwrap_or(u32::MAX),
    );
    (
        field_name(type_name, i, s, "updates"),
        field_name(type_name, i, s, "checkpoints"),
    )
}

impl ReplicaLog {
    /// Opens (or creates) the logs of a replica; a torn tail left by a crash is cut.
    pub(super) fn open(
        storage: &Arc<dyn Storage>,
        type_name: &str,
        index: usize,
        shard: usize,
        policy: Policy,
        durability: Durability,
    ) -> Result<Self, derecho_persist::Error> {
        let (u, c) = names(type_name, index, shard);
        // A restart reads only the newest checkpoint and the updates after it, and every read
        // verifies its entry: the older payloads need not be read to open the logs.
        let options = LogOptions {
            verify_sealed: false,
            signer: policy.signer.clone(),
            ..LogOptions::default()
        };
        let updates = Log::open(Arc::clone(storage), &u, options.clone())?;
        let checkpoints = Log::open(Arc::clone(storage), &c, options)?;
        let since = updates.infos(checkpoints.latest_version(), Version::MAX);
        let since_bytes: u64 = since.iter().map(|e| u64::from(e.len)).sum();
        let checkpoint_len = checkpoints
            .infos(INVALID, Version::MAX)
            .last()
            .map_or(0, |e| u64::from(e.len));
        Ok(Self {
            updates,
            checkpoints,
            since_checkpoint: AtomicU64::new(since.len() as u64),
            bytes_since_checkpoint: AtomicU64::new(since_bytes),
            checkpoint_len: AtomicU64::new(checkpoint_len),
            since_attempt: AtomicU64::new(0),
            attempt_gap: AtomicU64::new(0),
            broken: std::sync::atomic::AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
            policy,
            durability,
        })
    }

    /// The newest version recorded.
    pub(super) fn latest(&self) -> Version {
        let pending = lock(&self.pending).entries.last().map_or(INVALID, |e| e.0);
        self.updates
            .latest_version()
            .max(self.checkpoints.latest_version())
            .max(pending)
    }

    /// Writes the buffered updates to the log in one batch. A failure drops them and marks
    /// the log broken (see [`ReplicaLog::record`]).
    fn flush(&self) -> Result<(), derecho_persist::Error> {
        let mut p = lock(&self.pending);
        self.flush_locked(&mut p)
    }

    fn flush_locked(&self, p: &mut Pending) -> Result<(), derecho_persist::Error> {
        if p.entries.is_empty() {
            return Ok(());
        }
        let batch: Vec<derecho_persist::BatchEntry<'_>> = p
            .entries
            .iter()
            .map(|(version, hlc, update)| derecho_persist::BatchEntry {
                version: *version,
                hlc: *hlc,
                kind: KIND_UPDATE,
                payload: update,
            })
            .collect();
        let written = self.updates.append_batch(&batch);
        drop(batch);
        p.entries.clear();
        p.bytes = 0;
        if written.is_err() {
            self.broken.store(true, Ordering::Relaxed);
        }
        written
    }

    /// What a restore reads: the newest checkpoint (read, so checksummed), and the updates
    /// after it.
    fn restorable(
        &self,
    ) -> Result<(Option<derecho_persist::Entry>, derecho_persist::LogIter), derecho_persist::Error>
    {
        let checkpoint = self.checkpoints.latest_at_or_before(Version::MAX)?;
        let base = checkpoint.as_ref().map_or(INVALID, |c| c.version);
        Ok((checkpoint, self.updates.iter_from(base)))
    }

    /// Brings `obj` to the newest recorded version: the newest checkpoint, then every update
    /// after it. Returns that version.
    pub(super) fn restore(&self, obj: &dyn Erased) -> Result<Version, RestoreError> {
        let (checkpoint, updates) = self.restorable()?;
        let base = match checkpoint {
            Some(c) => {
                obj.load(&mut c.payload.as_slice())
                    .map_err(|source| RestoreError::Load {
                        version: c.version,
                        source,
                    })?;
                c.version
            }
            None => INVALID,
        };
        let mut replayed = 0u64;
        for e in updates {
            let e = e?;
            // An update that did not decode was refused on every replica when it was first
            // delivered; it is refused again here.
            let _ = obj.apply(&e.payload);
            replayed += 1;
        }
        tracing::debug!(base, replayed, "restored a persistent replica");
        Ok(self.latest())
    }

    /// Reads the newest checkpoint and every update after it, verifying their checksums: what
    /// [`ReplicaLog::restore`] will read. A damaged entry is an error here, before this log is
    /// reported to a restart.
    pub(super) fn verify_restorable(&self) -> Result<(), derecho_persist::Error> {
        let (_, updates) = self.restorable()?;
        for e in updates {
            e?;
        }
        Ok(())
    }

    /// Appends an applied (write-behind) or about-to-be-applied (write-ahead) update. Once an
    /// append failed, nothing more is appended until a checkpoint repairs the log: a later
    /// update on disk after a missing one would claim a state that cannot be rebuilt.
    pub(super) fn record(
        &self,
        version: Version,
        hlc: Hlc,
        update: &[u8],
    ) -> Result<(), derecho_persist::Error> {
        self.since_attempt.fetch_add(1, Ordering::Relaxed);
        if self.broken.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.since_checkpoint.fetch_add(1, Ordering::Relaxed);
        self.bytes_since_checkpoint
            .fetch_add(update.len() as u64, Ordering::Relaxed);
        let mut p = lock(&self.pending);
        if update.len() >= LARGE_UPDATE {
            // Large updates gain nothing from batching: write them straight from the
            // delivered bytes, after what is buffered.
            self.flush_locked(&mut p)?;
            if let Err(e) = self.updates.append(version, hlc, KIND_UPDATE, update) {
                self.broken.store(true, Ordering::Relaxed);
                return Err(e);
            }
            return Ok(());
        }
        p.bytes += update.len();
        p.entries.push((version, hlc, update.to_vec()));
        if p.entries.len() >= PENDING_ENTRIES || p.bytes >= PENDING_BYTES {
            self.flush_locked(&mut p)?;
        }
        Ok(())
    }

    /// Whether a checkpoint is due (interval or bytes reached, the update log over its bounds, or the
    /// log missing an update), and no failed attempt asks to wait longer.
    pub(super) fn checkpoint_due(&self) -> bool {
        let wanted = self.broken.load(Ordering::Relaxed)
            || self.since_checkpoint.load(Ordering::Relaxed) >= self.policy.checkpoint_interval
            || self.bytes_since_checkpoint.load(Ordering::Relaxed)
                >= self
                    .policy
                    .checkpoint_bytes
                    .max(self.checkpoint_len.load(Ordering::Relaxed))
            || self.updates.len() as u64 > self.policy.max_entries
            || self.updates.bytes_used() > self.policy.max_bytes;
        wanted
            && self.since_attempt.load(Ordering::Relaxed)
                >= self.attempt_gap.load(Ordering::Relaxed)
    }

    /// Records `state` (the object at `version`) as a checkpoint, durably, then trims what it
    /// makes unnecessary: older checkpoints but the previous one, and the updates it covers
    /// when the update log is over `max_log_entry` or `max_data_size`.
    pub(super) fn checkpoint(
        &self,
        version: Version,
        hlc: Hlc,
        state: &[u8],
    ) -> Result<(), derecho_persist::Error> {
        self.since_attempt.store(0, Ordering::Relaxed);
        let done = self.try_checkpoint(version, hlc, state);
        let gap = if done.is_ok() {
            0
        } else {
            self.policy.checkpoint_interval
        };
        self.attempt_gap.store(gap, Ordering::Relaxed);
        done
    }

    fn try_checkpoint(
        &self,
        version: Version,
        hlc: Hlc,
        state: &[u8],
    ) -> Result<(), derecho_persist::Error> {
        // The updates it covers go first (a failure here leaves the log broken, which this
        // checkpoint then repairs).
        let _ = self.flush();
        let previous = self.checkpoints.latest_version();
        self.checkpoints
            .append(version, hlc, KIND_CHECKPOINT, state)?;
        self.checkpoints.persist()?;
        self.updates.persist()?;
        self.since_checkpoint.store(0, Ordering::Relaxed);
        self.bytes_since_checkpoint.store(0, Ordering::Relaxed);
        self.checkpoint_len
            .store(state.len() as u64, Ordering::Relaxed);
        // The checkpoint holds every update up to `version`, the missing ones included.
        self.broken.store(false, Ordering::Relaxed);
        if previous != INVALID {
            self.checkpoints.trim(previous)?;
        }
        if self.updates.len() as u64 > self.policy.max_entries
            || self.updates.bytes_used() > self.policy.max_bytes
        {
            self.updates.trim(version.saturating_add(1))?;
        }
        Ok(())
    }

    /// Replaces the logs with one checkpoint: `state` at `version`, received by transfer (with
    /// no checkpoint if the shard has no version yet).
    pub(super) fn reset_to(
        &self,
        version: Version,
        state: &[u8],
    ) -> Result<(), derecho_persist::Error> {
        *lock(&self.pending) = Pending::default();
        self.updates.truncate(INVALID)?;
        self.checkpoints.truncate(INVALID)?;
        self.since_checkpoint.store(0, Ordering::Relaxed);
        self.bytes_since_checkpoint.store(0, Ordering::Relaxed);
        self.checkpoint_len
            .store(state.len() as u64, Ordering::Relaxed);
        self.broken.store(false, Ordering::Relaxed);
        if version == INVALID {
            // The shard has no history yet: the state received is the initial one.
            return Ok(());
        }
        self.checkpoints
            .append(version, Hlc::new(now_us(), 0), KIND_CHECKPOINT, state)?;
        self.checkpoints.persist()?;
        Ok(())
    }

    /// Writes the buffered updates and syncs both logs; returns the newest version whose
    /// state is on disk.
    pub(super) fn persist(&self) -> Result<Version, derecho_persist::Error> {
        self.flush()?;
        let c = self.checkpoints.persist()?;
        let u = self.updates.persist()?;
        Ok(c.max(u))
    }
}

/// A member's persistence: its storage, and what its persist worker has done.
pub(super) struct Persistence {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) policy: Policy,
    /// Set to wake the worker.
    wake: Mutex<bool>,
    woken: Condvar,
    /// Per subgroup: the newest version on this member's disk.
    local: Mutex<BTreeMap<usize, Version>>,
    /// Signalled when `local` moves.
    pub(super) persisted: Condvar,
    /// Per subgroup: the highest global frontier seen. A new view's table starts empty, so
    /// its frontier reads low until every member has published again; the frontier reported
    /// never goes back.
    global: Mutex<BTreeMap<usize, Version>>,
    /// The kinds of failure already logged (each is logged once).
    reported: Mutex<std::collections::BTreeSet<String>>,
    /// The log of ragged trims, opened at the first one.
    trims: Mutex<Option<Log>>,
}

impl Persistence {
    pub(super) fn new(storage: Arc<dyn Storage>, policy: Policy) -> Self {
        Self {
            storage,
            policy,
            wake: Mutex::new(false),
            woken: Condvar::new(),
            local: Mutex::new(BTreeMap::new()),
            persisted: Condvar::new(),
            global: Mutex::new(BTreeMap::new()),
            reported: Mutex::new(std::collections::BTreeSet::new()),
            trims: Mutex::new(None),
        }
    }

    /// Asks the worker for a round.
    pub(super) fn wake(&self) {
        *lock(&self.wake) = true;
        self.woken.notify_one();
    }

    /// The newest version of `subgroup` on this member's disk.
    pub(super) fn local(&self, subgroup: usize) -> Version {
        lock(&self.local).get(&subgroup).copied().unwrap_or(INVALID)
    }

    /// The global persistence frontier of `subgroup` given what the current view's table
    /// shows (`seen`): never lower than one reported before.
    pub(super) fn global(&self, subgroup: usize, seen: Option<Version>) -> Version {
        let mut g = lock(&self.global);
        let e = g.entry(subgroup).or_insert(INVALID);
        if let Some(v) = seen {
            *e = (*e).max(v);
        }
        *e
    }

    /// Waits up to `timeout` until this member has `version` of `subgroup` on disk.
    pub(super) fn wait_local(
        &self,
        subgroup: usize,
        version: Version,
        timeout: Duration,
    ) -> Result<(), PersistenceError> {
        let deadline = Instant::now() + timeout;
        let mut local = lock(&self.local);
        loop {
            if local.get(&subgroup).is_some_and(|v| *v >= version) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PersistenceError::Timeout(timeout));
            }
            local = wait_timeout(&self.persisted, local, left.min(Duration::from_millis(200)));
        }
    }

    /// Logs a persistence failure, once per kind (`what`): a full disk fails every update.
    pub(super) fn report_error(&self, what: &str, e: &dyn std::fmt::Display) {
        let mut seen = lock(&self.reported);
        if seen.len() < 64 && seen.insert(what.to_string()) {
            tracing::error!(error = %format!("{what}: {e}"),
                "persistence failed; the persistence frontier stalls until it succeeds again");
        }
    }
}

/// What a node reports for a total restart: its logged view and, for each persistent shard
/// it held there, the newest version on its disk. `None` without a logged view.
pub(super) fn restart_info(
    storage: &Arc<dyn Storage>,
    me: NodeId,
    types: &[TypeEntry],
) -> Result<Option<RestartInfo>, derecho_persist::Error> {
    let Some(view) = load_object::<_, View>(storage.as_ref(), VIEW_OBJECT)? else {
        return Ok(None);
    };
    let mut versions = Vec::new();
    for t in types.iter().filter(|t| t.durability.is_some()) {
        for sg in t.first..t.first + t.count {
            // An inadequate view has no shards; its members still hold those of the last
            // adequate view.
            let Some(shard) = view
                .holders()
                .get(sg)
                .and_then(|s| s.shards.iter().position(|k| k.members.contains(&me)))
            else {
                continue;
            };
            // Nothing is appended to this log: it needs no key.
            let policy = Policy {
                checkpoint_interval: u64::MAX,
                checkpoint_bytes: u64::MAX,
                max_entries: u64::MAX,
                max_bytes: u64::MAX,
                signer: None,
            };
            let log = ReplicaLog::open(
                storage,
                &t.name,
                sg - t.first,
                shard,
                policy,
                Durability::WriteBehind,
            )?;
            // The logs were opened by their headers: read (and so checksum) everything a
            // restore will need before offering this log to the restart, which may make it
            // the shard's source.
            log.verify_restorable()?;
            versions.push(ShardVersion {
                subgroup: sg,
                shard,
                version: log.persist()?,
            });
        }
    }
    Ok(Some(RestartInfo { view, versions }))
}

/// Logs an installed view (before it is used), so a total restart knows the last one.
pub(super) fn log_view(p: &Persistence, v: &View) {
    if let Err(e) = save_object(p.storage.as_ref(), VIEW_OBJECT, v) {
        p.report_error("logging the view", &e);
    }
}

/// A trim as little-endian `u64`s: per subgroup its id, its sender count, then each sender's
/// last delivered index (as `i64`).
fn encode_trim(trims: &BTreeMap<usize, Vec<i64>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (sg, last) in trims {
        out.extend_from_slice(&(*sg as u64).to_le_bytes());
        out.extend_from_slice(&(last.len() as u64).to_le_bytes());
        for l in last {
            out.extend_from_slice(&l.to_le_bytes());
        }
    }
    out
}

/// The inverse of [`encode_trim`]; `None` for bytes it did not write.
fn decode_trim(bytes: &[u8]) -> Option<BTreeMap<usize, Vec<i64>>> {
    let mut words = bytes.chunks_exact(8).map(|c| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    });
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    let mut out = BTreeMap::new();
    while let Some(sg) = words.next() {
        let n = usize::try_from(words.next()?).ok()?;
        if n > bytes.len() / 8 {
            return None;
        }
        let last = (0..n)
            .map(|_| words.next().map(|w| w as i64))
            .collect::<Option<Vec<i64>>>()?;
        out.insert(usize::try_from(sg).ok()?, last);
    }
    Some(out)
}

/// The ragged trims logged on `storage`, oldest first: each ended view's id with, per
/// subgroup of this member, the last message index delivered per sender. An entry that does
/// not decode is a [`derecho_persist::Error::Codec`].
pub fn logged_trims(
    storage: &Arc<dyn Storage>,
) -> Result<Vec<(u64, crate::multicast::RaggedTrim)>, derecho_persist::Error> {
    let options = LogOptions {
        read_only: true,
        ..LogOptions::default()
    };
    let log = Log::open(Arc::clone(storage), TRIM_LOG, options)?;
    log.iter_from(INVALID)
        .map(|e| {
            let e = e?;
            let trims = decode_trim(&e.payload).ok_or_else(|| derecho_persist::Error::Codec {
                name: TRIM_LOG.to_string(),
                reason: format!("the trim of view {} does not decode", e.version),
            })?;
            Ok((u64::try_from(e.version).unwrap_or(0), trims))
        })
        .collect()
}

impl Persistence {
    /// Opens the log of ragged trims (at start, so that the first trim does not read it on the
    /// core loop).
    pub(super) fn open_trim_log(&self) -> Result<(), derecho_persist::Error> {
        let log = Log::open(Arc::clone(&self.storage), TRIM_LOG, LogOptions::default())?;
        *lock(&self.trims) = Some(log);
        Ok(())
    }
}

/// Logs the ragged trim of view `vid` durably, before it is acted on ([`logged_trims`] reads
/// them back): one append and one sync, on the core loop, once per view change. At least the
/// newest [`TRIMS_KEPT`] are kept (older ones are dropped in batches). A failure is logged as an
/// error and the trim is acted on regardless: the view change cannot wait for a disk.
pub(super) fn log_trim(p: &Persistence, vid: u64, trims: &BTreeMap<usize, Vec<i64>>) {
    let logged = (|| -> Result<(), derecho_persist::Error> {
        let mut slot = lock(&p.trims);
        let log = match slot.as_mut() {
            Some(log) => log,
            // Opened at start; opened here only if that failed then.
            None => slot.insert(Log::open(
                Arc::clone(&p.storage),
                TRIM_LOG,
                LogOptions::default(),
            )?),
        };
        let version = i64::try_from(vid).unwrap_or(i64::MAX);
        // A restart numbers its view past every logged one, so trims only move forward; one
        // already there (the same view ended twice cannot happen) is left as it is.
        if version <= log.latest_version() {
            return Ok(());
        }
        log.append(
            version,
            Hlc::new(now_us(), 0),
            KIND_TRIM,
            &encode_trim(trims),
        )?;
        log.persist()?;
        if log.len() > 2 * TRIMS_KEPT {
            let keep_from = log
                .infos(INVALID, Version::MAX)
                .get(log.len() - TRIMS_KEPT)
                .map_or(INVALID, |e| e.version);
            log.trim(keep_from)?;
        }
        Ok(())
    })();
    if let Err(e) = logged {
        tracing::error!(vid, error = %e,
            "the ragged trim could not be logged; it is acted on without a record on disk");
    }
}

/// The persist worker: syncs every persistent replica's logs when woken, records the
/// versions on disk, and publishes them in the current view's SST.
pub(super) fn persist_worker(inner: &Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        let Some(p) = i.persistence.as_ref() else {
            return;
        };
        {
            let mut w = lock(&p.wake);
            if !*w {
                w = wait_timeout(&p.woken, w, Duration::from_millis(500));
            }
            if !*w {
                continue;
            }
            *w = false;
        }
        let logs: Vec<(usize, Arc<ReplicaLog>)> = read_lock(&i.replicas)
            .iter()
            .filter_map(|(sg, r)| r.log.as_ref().map(|l| (*sg, Arc::clone(l))))
            .collect();
        let mut done = Vec::with_capacity(logs.len());
        for (sg, log) in &logs {
            match log.persist() {
                Ok(v) => done.push((*sg, v)),
                Err(e) => p.report_error(&format!("syncing subgroup {sg}"), &e),
            }
        }
        {
            let mut local = lock(&p.local);
            for (sg, v) in &done {
                let e = local.entry(*sg).or_insert(INVALID);
                *e = (*e).max(*v);
            }
        }
        p.persisted.notify_all();
        publish(&i, &done);
    }
}

/// Publishes `versions` in the SST of the current view, waiting (bounded) for a view that is
/// being installed to start.
fn publish(i: &Inner, versions: &[(usize, Version)]) {
    if versions.is_empty() {
        return;
    }
    let vid = read_lock(&i.view).vid;
    for _ in 0..200 {
        let Some(node) = i.node() else { return };
        match node.multicast() {
            Ok(g) if g.spec().vid == vid => {
                for (sg, v) in versions {
                    // Not a member of the subgroup in this view: nothing to publish there.
                    let _ = g.publish_persisted(*sg, *v);
                }
                return;
            }
            // The view is still being set up, or it is inadequate (nothing to publish in it:
            // the next adequate view republishes).
            Ok(_) | Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// The version of `seq` in view `vid`.
pub(super) fn version_of(vid: u64, seq: i64) -> Version {
    derecho_persist::pack(
        i32::try_from(vid).unwrap_or(i32::MAX),
        i32::try_from(seq).unwrap_or(i32::MAX),
    )
}

/// A replica's newest applied version, for the state it transfers (−1 if not persistent).
pub(super) fn applied_version(r: &Replica) -> Version {
    r.log.as_ref().map_or(INVALID, |l| l.latest())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log opened by its headers still refuses to be offered to a restart when an entry a
    /// restore would read is damaged in a sealed segment.
    #[test]
    fn a_damaged_sealed_entry_fails_the_restore_check() -> Result<(), derecho_persist::Error> {
        let disk = Arc::new(derecho_persist::SimStorage::new());
        let storage: Arc<dyn Storage> = disk.clone();
        let policy = || Policy::of(&PersSection::default());
        let log = ReplicaLog::open(&storage, "Kv", 0, 0, policy(), Durability::WriteBehind)?;
        // Two segments of 64 MiB: 1 MiB updates fill the first and start the second.
        let update = vec![7u8; 1 << 20];
        for seq in 0..70 {
            log.record(version_of(0, seq), Hlc::new(1, 0), &update)?;
        }
        log.persist()?;
        drop(log);
        let (updates, _) = names("Kv", 0, 0);
        let first = format!("{updates}.0000000000.seg");
        let mut bytes = disk.read_all(&first)?;
        bytes[100] ^= 1;
        disk.replace(&first, &bytes)?;
        let log = ReplicaLog::open(&storage, "Kv", 0, 0, policy(), Durability::WriteBehind)?;
        match log.verify_restorable() {
            Err(e) => assert!(e.is_corrupt(), "{e}"),
            Ok(()) => panic!("the damaged entry went unnoticed"),
        }
        Ok(())
    }

    #[test]
    fn trims_round_trip_and_garbage_does_not_decode() {
        let trims = BTreeMap::from([(0, vec![4, -1, 7]), (3, vec![]), (5, vec![i64::MAX])]);
        assert_eq!(decode_trim(&encode_trim(&trims)), Some(trims));
        assert_eq!(decode_trim(&[]), Some(BTreeMap::new()));
        assert_eq!(decode_trim(&[1, 2, 3]), None);
        // A sender count larger than the bytes that follow.
        let mut lying = 0u64.to_le_bytes().to_vec();
        lying.extend_from_slice(&1000u64.to_le_bytes());
        assert_eq!(decode_trim(&lying), None);
    }
}
