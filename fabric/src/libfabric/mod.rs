//! The libfabric backend (cargo feature `libfabric`): connection-oriented `FI_EP_MSG` endpoints
//! with `FI_RMA` writes, on the provider named by `[RDMA] provider` (`tcp` on Ethernet and
//! loopback, `verbs` on RDMA NICs) in the domain named by `[RDMA] domain` (`lo` on loopback).
//!
//! The side channel, lookups, revocation and failure reporting are the shared RDMA-style layer
//! (`crate::rdma`); this module is the transport underneath:
//!
//! * one fabric and one `FI_THREAD_SAFE` domain per process; every region is registered with
//!   `fi_mr_reg`, honouring the provider's `mr_mode` (local descriptors with `FI_MR_LOCAL`,
//!   virtual addresses with `FI_MR_VIRT_ADDR`, provider keys with `FI_MR_PROV_KEY`);
//! * per link: an event queue, a completion queue with a wait object, and an endpoint. The
//!   accepting side opens a passive endpoint for the link and sends its name in the welcome;
//!   the dialing side `fi_connect`s to it;
//! * a **progress thread** per link: on providers such as `tcp` a remote write only lands while
//!   the target drives progress, so this thread is what lets writes land without the target
//!   application doing anything. It reads the completion queue without blocking (`fi_cq_read`,
//!   which is where incoming writes land) until it is empty, then, where the queue's wait object
//!   is a file descriptor (`FI_WAIT_FD`), asks `fi_trywait` and blocks in `poll` on it, outside
//!   the provider; elsewhere it blocks in `fi_cq_sread`. On the `tcp` provider (whose default
//!   wait object is a poll set) this cut the 8-byte round trip by about a third. The thread
//!   turns remote completion data (`FI_REMOTE_CQ_DATA`, on every write) into doorbell rings and
//!   notifications, and local completions into completed tickets;
//! * **polling threads**: a thread spinning on memory may drive a link's progress itself
//!   (`Link::poll_progress`): it reads the queue without blocking and handles the entries with
//!   the same code, one reader at a time (a per-link lock, which a polling thread only tries),
//!   so a write lands as soon as it arrives instead of after a thread wake-up. While such
//!   threads poll, the progress thread naps (100 µs) instead of waking for every write, and
//!   returns to blocking on the queue once a nap passes without a poll. A polling thread never
//!   waits: entries it cannot handle without waiting (a full notification queue) are left,
//!   in order, to the progress thread;
//! * writes are `fi_writemsg` with `FI_REMOTE_CQ_DATA` and `FI_INJECT` up to the provider's
//!   inject size. Only signaled writes ask for a completion (`FI_COMPLETION` with
//!   `FI_DELIVERY_COMPLETE`; the queue is bound with `FI_SELECTIVE_COMPLETION`), which covers the
//!   writes before them: the others complete silently, sparing a queue entry and a wake-up of
//!   the progress thread each.
//!
//! All `unsafe` code of the backend is in this module and `sys`.

#[allow(unsafe_code)]
pub(crate) mod sys;

use std::ffi::{c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backends::LibfabricConfig;
use crate::rdma::{self, Common, Events, Post, PostError, RdmaFabric, Registered, Transport};
use crate::{FabricError, NodeId, Region};

/// The libfabric API version requested (1.12, the oldest supported).
const API_VERSION: u32 = sys::fi_version_of(1, 12);
/// Completion entries read per `fi_cq_sread`.
const CQ_BATCH: usize = 16;
/// Longest a progress thread blocks before checking whether its link is finished.
const PROGRESS_NAP_MS: i32 = 200;
/// While threads drive a link's progress through `poll_progress`, its progress thread sleeps
/// this long between looks instead of waking for every arriving write; it goes back to blocking
/// on the queue once a nap passes without a poll.
const POLLED_NAP: Duration = Duration::from_micros(100);

/// A fabric over libfabric. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LibfabricFabric(RdmaFabric<Lf>);

rdma::delegate_fabric!(LibfabricFabric);

impl LibfabricFabric {
    /// Opens the provider's fabric and domain, binds the side channel and starts accepting
    /// peers.
    pub fn start(config: LibfabricConfig) -> Result<Self, FabricError> {
        let transport = Lf::open(&config)?;
        tracing::info!(
            node = config.local_id,
            provider = %transport.dom.provider,
            domain = %transport.dom.domain_name,
            mr_mode = transport.dom.mr_mode,
            inject = transport.dom.inject_size,
            "libfabric fabric opened"
        );
        let c = &config;
        let common = Common::new(
            c.local_id,
            c.listen,
            c.handshake_timeout,
            c.send_timeout,
            c.credentials.clone(),
        );
        Ok(Self(RdmaFabric::start(transport, common)?))
    }
}

fn fi_error(what: &str, ret: i64) -> FabricError {
    let code = i32::try_from(-ret).unwrap_or(i32::MAX);
    // SAFETY: fi_strerror returns a pointer to a static, NUL-terminated string for any code.
    let text = unsafe { CStr::from_ptr(sys::fi_strerror(code)) }
        .to_string_lossy()
        .into_owned();
    FabricError::io(
        format!("libfabric {what}: {text} ({ret})"),
        std::io::Error::other(text),
    )
}

fn check(what: &str, ret: i32) -> Result<(), FabricError> {
    if ret == 0 {
        Ok(())
    } else {
        Err(fi_error(what, i64::from(ret)))
    }
}

/// Closes a libfabric object.
///
/// # Safety
/// `fid` must be an open libfabric object that nothing uses any more.
unsafe fn close(fid: *mut sys::fid) {
    if !fid.is_null() {
        // SAFETY: guaranteed by the caller.
        let _ = unsafe { sys::fi_close(fid) };
    }
}

/// The process's fabric and domain (closed when the last endpoint and registration are gone).
struct Domain {
    info: *mut sys::fi_info,
    fabric: *mut sys::fid_fabric,
    domain: *mut sys::fid_domain,
    provider: String,
    domain_name: String,
    mr_mode: u64,
    inject_size: usize,
    rx_cq_data: bool,
    tx_depth: usize,
    rx_depth: usize,
}

// SAFETY: the domain is opened with FI_THREAD_SAFE, so libfabric allows its objects to be used
// from any thread; the raw pointers are only closed once, in Drop.
unsafe impl Send for Domain {}
// SAFETY: as above.
unsafe impl Sync for Domain {}

impl Drop for Domain {
    fn drop(&mut self) {
        // SAFETY: every endpoint and registration holds an Arc<Domain>, so none is open any
        // more; each object is closed once, children first.
        unsafe {
            close(&mut (*self.domain).fid);
            close(&mut (*self.fabric).fid);
            sys::fi_freeinfo(self.info);
        }
    }
}

/// The libfabric transport.
pub(crate) struct Lf {
    dom: Arc<Domain>,
    next_key: AtomicU64,
}

impl Lf {
    fn open(c: &LibfabricConfig) -> Result<Self, FabricError> {
        let unsupported = |what: String| {
            FabricError::io(
                format!("{what}; change [RDMA] provider / domain, or [RDMA] backend"),
                std::io::Error::from(std::io::ErrorKind::Unsupported),
            )
        };
        let provider = CString::new(c.provider.as_str())
            .map_err(|_| unsupported("provider name has a NUL byte".into()))?;
        let domain = CString::new(c.domain.as_str())
            .map_err(|_| unsupported("domain name has a NUL byte".into()))?;
        let node = CString::new(c.listen.ip().to_string())
            .map_err(|_| unsupported("bad listen address".into()))?;
        let mut info: *mut sys::fi_info = std::ptr::null_mut();
        // SAFETY: fi_allocinfo returns a zeroed fi_info with its attribute structs allocated (or
        // NULL); we fill in hints, hand them to fi_getinfo, and free them with fi_freeinfo,
        // which also frees the strdup'ed names.
        let ret = unsafe {
            let hints = sys::fi_allocinfo();
            if hints.is_null() {
                return Err(FabricError::InvalidRegion(
                    "fi_allocinfo: out of memory".into(),
                ));
            }
            (*hints).caps = u64::from(sys::FI_MSG | sys::FI_RMA | sys::FI_WRITE)
                | u64::from(sys::FI_REMOTE_WRITE);
            (*hints).mode = sys::FI_RX_CQ_DATA;
            (*(*hints).ep_attr).type_ = sys::FI_EP_MSG;
            (*(*hints).domain_attr).threading = sys::FI_THREAD_SAFE;
            (*(*hints).domain_attr).mr_mode = (sys::FI_MR_LOCAL
                | sys::FI_MR_VIRT_ADDR
                | sys::FI_MR_ALLOCATED
                | sys::FI_MR_PROV_KEY) as i32;
            (*(*hints).fabric_attr).prov_name = libc::strdup(provider.as_ptr());
            if !c.domain.is_empty() {
                (*(*hints).domain_attr).name = libc::strdup(domain.as_ptr());
            }
            (*(*hints).tx_attr).size = c.tx_depth as usize;
            (*(*hints).rx_attr).size = c.rx_depth as usize;
            let ret = sys::fi_getinfo(
                API_VERSION,
                node.as_ptr(),
                std::ptr::null(),
                sys::FI_SOURCE,
                hints,
                &mut info,
            );
            sys::fi_freeinfo(hints);
            ret
        };
        if ret != 0 || info.is_null() {
            return Err(unsupported(format!(
                "libfabric has no provider {:?} with FI_EP_MSG + FI_RMA in domain {:?} \
                 for {} ({})",
                c.provider,
                c.domain,
                c.listen.ip(),
                fi_error("fi_getinfo", i64::from(ret))
            )));
        }
        // SAFETY: `info` is a valid list returned by fi_getinfo; we read its first entry's
        // attributes and open the fabric and domain it describes. On error the objects opened
        // so far are closed and the list freed.
        unsafe {
            let attr = &*(*info).domain_attr;
            let mr_mode = attr.mr_mode as u64;
            let cq_data_size = attr.cq_data_size;
            let name = |p: *const libc::c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            let provider = name((*(*info).fabric_attr).prov_name);
            let domain_name = name(attr.name);
            let inject_size = (*(*info).tx_attr).inject_size;
            let rx_cq_data = (*info).mode & sys::FI_RX_CQ_DATA != 0;
            if cq_data_size < 8 {
                sys::fi_freeinfo(info);
                return Err(unsupported(format!(
                    "provider {provider} carries {cq_data_size} bytes of remote CQ data; this \
                     backend needs 8 (on RDMA NICs use [RDMA] backend = verbs)"
                )));
            }
            if (*(*info).tx_attr).msg_order & u64::from(sys::FI_ORDER_WAW) == 0 {
                tracing::warn!(
                    %provider,
                    "provider does not promise write-after-write order; the fabric contract \
                     relies on it"
                );
            }
            let mut fabric: *mut sys::fid_fabric = std::ptr::null_mut();
            let ret = sys::fi_fabric((*info).fabric_attr, &mut fabric, std::ptr::null_mut());
            if ret != 0 {
                sys::fi_freeinfo(info);
                return Err(fi_error("fi_fabric", i64::from(ret)));
            }
            let mut domain: *mut sys::fid_domain = std::ptr::null_mut();
            let ret = sys::fi_domain(fabric, info, &mut domain, std::ptr::null_mut());
            if ret != 0 {
                close(&mut (*fabric).fid);
                sys::fi_freeinfo(info);
                return Err(fi_error("fi_domain", i64::from(ret)));
            }
            Ok(Self {
                dom: Arc::new(Domain {
                    info,
                    fabric,
                    domain,
                    provider,
                    domain_name,
                    mr_mode,
                    inject_size,
                    rx_cq_data,
                    tx_depth: c.tx_depth.max(1) as usize,
                    rx_depth: c.rx_depth.max(1) as usize,
                }),
                next_key: AtomicU64::new(1),
            })
        }
    }
}

/// A memory registration.
pub(crate) struct LfMr {
    mr: *mut sys::fid_mr,
    desc: *mut c_void,
    _dom: Arc<Domain>,
}

// SAFETY: the registration belongs to an FI_THREAD_SAFE domain; it is only closed in Drop.
unsafe impl Send for LfMr {}
// SAFETY: as above; `desc` is an opaque token passed back to libfabric.
unsafe impl Sync for LfMr {}

impl Drop for LfMr {
    fn drop(&mut self) {
        // SAFETY: the registration is open and no longer used (its region was removed from
        // the fabric's tables before the last handle went away).
        unsafe { close(&mut (*self.mr).fid) };
    }
}

/// The objects of one connection.
pub(crate) struct EpInner {
    ep: *mut sys::fid_ep,
    cq: *mut sys::fid_cq,
    eq: *mut sys::fid_eq,
    pep: *mut sys::fid_pep,
    /// The completion queue's wait object as a file descriptor, when the provider offers one:
    /// the progress thread then reads the queue without blocking and blocks in `poll` on
    /// this, outside the provider.
    wait_fd: Option<libc::c_int>,
    /// Held while reading the completion queue and handling what was read, by the progress
    /// thread or by a thread driving progress through `Link::poll_progress`, so the entries of
    /// one link are handled one reader at a time, in queue order. It holds the entries read
    /// but not handled: those a polling thread could not handle without waiting (for room in a
    /// notification queue). Only the progress thread handles them, before reading more.
    drain: Mutex<Vec<sys::fi_cq_data_entry>>,
    /// Set while `drain` holds entries, so the progress thread does not block on the queue.
    backlogged: AtomicBool,
    /// Counts `poll_progress` calls, so the progress thread sees that threads drive progress.
    polls: AtomicU64,
    stop: AtomicBool,
    dom: Arc<Domain>,
}

// SAFETY: all objects belong to an FI_THREAD_SAFE domain; they are closed once, in Drop.
unsafe impl Send for EpInner {}
// SAFETY: as above.
unsafe impl Sync for EpInner {}

impl Drop for EpInner {
    fn drop(&mut self) {
        // SAFETY: the progress thread (which holds an Arc of this) has exited, so nothing uses
        // these objects; endpoints are closed before the queues they are bound to.
        unsafe {
            if !self.ep.is_null() {
                close(&mut (*self.ep).fid);
            }
            if !self.pep.is_null() {
                close(&mut (*self.pep).fid);
            }
            if !self.cq.is_null() {
                close(&mut (*self.cq).fid);
            }
            if !self.eq.is_null() {
                close(&mut (*self.eq).fid);
            }
        }
    }
}

impl EpInner {
    fn new(dom: &Arc<Domain>) -> Result<Self, FabricError> {
        let mut me = EpInner {
            ep: std::ptr::null_mut(),
            cq: std::ptr::null_mut(),
            eq: std::ptr::null_mut(),
            pep: std::ptr::null_mut(),
            wait_fd: None,
            drain: Mutex::new(Vec::new()),
            backlogged: AtomicBool::new(false),
            polls: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            dom: Arc::clone(dom),
        };
        let mut eq_attr = sys::fi_eq_attr {
            size: 16,
            wait_obj: sys::FI_WAIT_UNSPEC,
            ..Default::default()
        };
        // SAFETY: the fabric is open; the attribute struct lives across the call; the queue
        // is closed by EpInner's Drop if a later step fails.
        check("fi_eq_open", unsafe {
            sys::fi_eq_open(dom.fabric, &mut eq_attr, &mut me.eq, std::ptr::null_mut())
        })?;
        // A file descriptor to block on if the provider has one, else whatever it offers.
        for wait_obj in [sys::FI_WAIT_FD, sys::FI_WAIT_UNSPEC] {
            let mut cq_attr = sys::fi_cq_attr {
                size: dom.tx_depth + dom.rx_depth,
                format: sys::FI_CQ_FORMAT_DATA,
                wait_obj,
                ..Default::default()
            };
            // SAFETY: the domain is open; the attribute struct lives across the call; the
            // queue is closed by EpInner's Drop if a later step fails.
            let ret = unsafe {
                sys::fi_cq_open(dom.domain, &mut cq_attr, &mut me.cq, std::ptr::null_mut())
            };
            if ret != 0 {
                if wait_obj == sys::FI_WAIT_UNSPEC {
                    return Err(fi_error("fi_cq_open", i64::from(ret)));
                }
                continue;
            }
            if wait_obj == sys::FI_WAIT_FD {
                let mut fd: libc::c_int = -1;
                // SAFETY: the queue is open; FI_GETWAIT on a queue with an FI_WAIT_FD wait
                // object writes one int.
                let ret = unsafe {
                    sys::fi_control(
                        &mut (*me.cq).fid,
                        sys::FI_GETWAIT as i32,
                        (&mut fd as *mut libc::c_int).cast::<c_void>(),
                    )
                };
                if ret == 0 && fd >= 0 {
                    me.wait_fd = Some(fd);
                } else {
                    // SAFETY: the queue was just opened and nothing else uses it.
                    unsafe { close(&mut (*me.cq).fid) };
                    me.cq = std::ptr::null_mut();
                    continue;
                }
            }
            break;
        }
        Ok(me)
    }

    /// Reads up to `entries.len()` completions (which drives the provider's progress:
    /// incoming writes land in memory here): without blocking, or with `block` (for queues
    /// without a wait descriptor) waiting in the provider until one arrives or
    /// [`PROGRESS_NAP_MS`] pass.
    fn read_cq(&self, entries: &mut [sys::fi_cq_data_entry], block: bool) -> isize {
        let (buf, count) = (entries.as_mut_ptr().cast::<c_void>(), entries.len());
        // SAFETY: the completion queue is open while `self` lives; `buf` has room for `count`
        // entries of the queue's format (FI_CQ_FORMAT_DATA); a blocking read waits at most
        // PROGRESS_NAP_MS.
        unsafe {
            if block {
                sys::fi_cq_sread(self.cq, buf, count, std::ptr::null(), PROGRESS_NAP_MS)
            } else {
                sys::fi_cq_read(self.cq, buf, count)
            }
        }
    }

    /// Blocks on the queue's wait descriptor until the queue may have something (or
    /// [`PROGRESS_NAP_MS`] pass); returns at once if there is no descriptor.
    fn wait_ready(&self) {
        let Some(fd) = self.wait_fd else {
            return;
        };
        // SAFETY: the queue is open while `self` lives.
        let mut cq_fid: *mut sys::fid = unsafe { &mut (*self.cq).fid };
        // SAFETY: the fabric and the queue are open; `cq_fid` is a list of one fid that lives
        // across the call.
        let ready = unsafe { sys::fi_trywait(self.dom.fabric, &mut cq_fid, 1) };
        // -FI_EAGAIN: something arrived meanwhile, read again. Any other answer is no promise
        // that blocking is safe, so block only as long as a nap. A polling thread that left
        // entries sets `backlogged` before it signals the queue, so entries left before the
        // trywait are seen here and those left after it wake the poll.
        if ready != -(sys::FI_EAGAIN as i32) && !self.backlogged.load(Ordering::SeqCst) {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd for the length of the call.
            let _ = unsafe { libc::poll(&mut pfd, 1, PROGRESS_NAP_MS) };
        }
    }

    /// Creates the endpoint from `info`, binds it to the queues, enables it and posts the
    /// receives that remote completion data consumes on providers that need them.
    fn open_endpoint(&mut self, info: *mut sys::fi_info) -> Result<(), FabricError> {
        // SAFETY: `info` is a valid fi_info (the domain's, or a connection request's); the
        // queues are open; the endpoint is closed by Drop if a later step fails.
        unsafe {
            check(
                "fi_endpoint",
                sys::fi_endpoint(self.dom.domain, info, &mut self.ep, std::ptr::null_mut()),
            )?;
            check(
                "fi_ep_bind(eq)",
                sys::fi_ep_bind(self.ep, &mut (*self.eq).fid, 0),
            )?;
            check(
                "fi_ep_bind(cq)",
                sys::fi_ep_bind(
                    self.ep,
                    &mut (*self.cq).fid,
                    u64::from(sys::FI_TRANSMIT | sys::FI_RECV) | sys::FI_SELECTIVE_COMPLETION,
                ),
            )?;
            check("fi_enable", sys::fi_enable(self.ep))?;
        }
        if self.dom.rx_cq_data {
            for _ in 0..self.dom.rx_depth {
                self.post_recv()?;
            }
        }
        Ok(())
    }

    /// Posts one empty receive (consumed by a write carrying remote completion data when the
    /// provider runs in FI_RX_CQ_DATA mode).
    fn post_recv(&self) -> Result<(), FabricError> {
        // SAFETY: the endpoint is enabled; an empty receive has no buffer to keep alive.
        let ret = unsafe {
            sys::fi_recv(
                self.ep,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
                sys::FI_ADDR_UNSPEC_,
                std::ptr::null_mut(),
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(fi_error("fi_recv", ret as i64))
        }
    }

    /// Waits for one connection-management event of kind `want` on the link's event queue.
    /// Returns the entry (whose `info` the caller owns for FI_CONNREQ).
    fn wait_event(&self, want: u32, timeout: Duration) -> Result<sys::fi_eq_cm_entry, FabricError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FabricError::Timeout {
                    what: format!("libfabric connection event {want}"),
                    after: timeout,
                });
            }
            let mut event: u32 = 0;
            // Room for the entry plus connection data some providers append.
            let mut buf = [0u64; 32];
            // SAFETY: the event queue is open; `buf` is large enough and aligned for an
            // fi_eq_cm_entry and lives across the call.
            let ret = unsafe {
                sys::fi_eq_sread(
                    self.eq,
                    &mut event,
                    buf.as_mut_ptr().cast::<c_void>(),
                    std::mem::size_of_val(&buf),
                    left.as_millis().clamp(1, 1000) as i32,
                    0,
                )
            };
            if ret == -(sys::FI_EAGAIN as isize) || ret == -(libc::EINTR as isize) {
                continue;
            }
            if ret == -(sys::FI_EAVAIL as isize) {
                let mut err = sys::fi_eq_err_entry::default();
                // SAFETY: the queue is open and `err` is a valid error entry to fill.
                unsafe { sys::fi_eq_readerr(self.eq, &mut err, 0) };
                return Err(fi_error(
                    "connection (event queue error)",
                    -i64::from(err.err),
                ));
            }
            if ret < 0 {
                return Err(fi_error("fi_eq_sread", ret as i64));
            }
            // SAFETY: a successful read of a CM event wrote an fi_eq_cm_entry at the start of
            // `buf`, which is suitably aligned (u64).
            let entry = unsafe { std::ptr::read(buf.as_ptr().cast::<sys::fi_eq_cm_entry>()) };
            if event == want {
                return Ok(entry);
            }
            if event == sys::FI_CONNREQ && !entry.info.is_null() {
                // SAFETY: a connection request's info is ours to free.
                unsafe { sys::fi_freeinfo(entry.info) };
            }
            if event == sys::FI_SHUTDOWN {
                return Err(FabricError::io(
                    "libfabric connection shut down during set-up",
                    std::io::Error::from(std::io::ErrorKind::ConnectionAborted),
                ));
            }
        }
    }
}

/// A connected endpoint and its progress thread.
pub(crate) struct LfEndpoint {
    inner: Arc<EpInner>,
    /// Where completions go (shared with the progress thread), for `poll_progress`.
    events: Arc<dyn Events>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A connection being set up.
pub(crate) enum LfPending {
    /// Dialing side: an enabled endpoint, not yet connected.
    Dial(EpInner),
    /// Accepting side: a passive endpoint listening for this link's connection request.
    Accept(EpInner),
}

// SAFETY: the objects belong to an FI_THREAD_SAFE domain and move to the thread that
// completes the connection.
unsafe impl Send for LfPending {}

/// What a link's progress thread does until its link is finished: read completions without
/// blocking while there are some, handle them, and block on the queue's wait object when there
/// are none. It reads as the queue's only reader (holding `drain`), but blocks on a wait
/// descriptor without holding it, so spinning threads can drive progress meanwhile.
fn progress_loop(ep: Arc<EpInner>, events: Arc<dyn Events>) {
    let mut entries = [sys::fi_cq_data_entry::default(); CQ_BATCH];
    let mut polls_seen = 0;
    loop {
        if ep.stop.load(Ordering::SeqCst) || events.stopped() {
            return;
        }
        let drained = {
            let mut backlog = match ep.drain.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                // A thread is polling: it handles what arrives. Waiting for the lock would
                // only make its unlock a system call.
                Err(TryLockError::WouldBlock) => {
                    std::thread::sleep(POLLED_NAP);
                    continue;
                }
            };
            if backlog.is_empty() {
                match drain_once(&ep, events.as_ref(), &mut entries, &mut backlog) {
                    // Without a descriptor to block on outside the provider, block inside it.
                    Drained::Empty if ep.wait_fd.is_none() => {
                        let n = ep.read_cq(&mut entries, true);
                        dispatch(&ep, events.as_ref(), &entries, n, &mut backlog)
                    }
                    other => other,
                }
            } else {
                // Entries a polling thread left: handle them first, waiting where needed.
                let held = std::mem::take(&mut *backlog);
                ep.backlogged.store(false, Ordering::SeqCst);
                match handle(&ep, events.as_ref(), &held, None) {
                    Ok(()) => Drained::Some,
                    Err(e) => Drained::Failed(e.to_string()),
                }
            }
        };
        match drained {
            Drained::Some => {}
            Drained::Empty => {
                // While other threads poll, waking for every write would only take a CPU from
                // them: nap instead, and block again once they stop.
                let polls = ep.polls.load(Ordering::Relaxed);
                if polls != polls_seen {
                    polls_seen = polls;
                    std::thread::sleep(POLLED_NAP);
                } else {
                    ep.wait_ready();
                }
            }
            Drained::Failed(reason) => {
                if !(ep.stop.load(Ordering::SeqCst) || events.stopped()) {
                    events.failed(reason);
                }
                return;
            }
        }
    }
}

/// What one read of a completion queue found.
enum Drained {
    /// Entries, now handled (or left in the backlog).
    Some,
    /// Nothing.
    Empty,
    /// The queue or the endpoint failed; the link must be failed with this reason.
    Failed(String),
}

/// Reads the completion queue once without blocking and handles what it read. The caller
/// holds `ep.drain` (whose entries are `backlog`), and fails the link on [`Drained::Failed`]
/// only after releasing it (failure handlers may close the endpoint, which joins the progress
/// thread). The progress thread passes `backlog` only when it is empty, and handles every
/// entry, waiting where it must; see [`handle`].
fn drain_once(
    ep: &EpInner,
    events: &dyn Events,
    entries: &mut [sys::fi_cq_data_entry],
    backlog: &mut Vec<sys::fi_cq_data_entry>,
) -> Drained {
    let n = ep.read_cq(entries, false);
    dispatch(ep, events, entries, n, backlog)
}

/// Handles the outcome `n` of a read into `entries` (see [`drain_once`]). Only a polling
/// thread leaves entries in `backlog`.
fn dispatch(
    ep: &EpInner,
    events: &dyn Events,
    entries: &[sys::fi_cq_data_entry],
    n: isize,
    backlog: &mut Vec<sys::fi_cq_data_entry>,
) -> Drained {
    if n > 0 {
        let read = &entries[..(n as usize).min(entries.len())];
        return match handle(ep, events, read, Some(backlog)) {
            Ok(()) => Drained::Some,
            Err(e) => Drained::Failed(e.to_string()),
        };
    }
    if n == 0 || n == -(sys::FI_EAGAIN as isize) || n == -(libc::EINTR as isize) {
        return Drained::Empty;
    }
    Drained::Failed(cq_failure(ep, n))
}

/// A receive could not be reposted after a completion consumed one: the link must fail.
#[derive(Debug, thiserror::Error)]
#[error("reposting a receive: {0}")]
struct RepostFailed(#[source] FabricError);

/// Turns completions into doorbell rings, notifications and completed tickets, in order. With
/// a `backlog` (a polling thread, which must not wait), a write whose notification finds its
/// queue full is left there with every entry after it, for the progress thread; without one,
/// it waits for room. Fails if a receive could not be reposted.
fn handle(
    ep: &EpInner,
    events: &dyn Events,
    entries: &[sys::fi_cq_data_entry],
    mut backlog: Option<&mut Vec<sys::fi_cq_data_entry>>,
) -> Result<(), RepostFailed> {
    let remote = u64::from(sys::FI_REMOTE_CQ_DATA);
    for (i, e) in entries.iter().enumerate() {
        if e.flags & remote != 0 {
            let len = (e.len > 0).then_some(e.len);
            match backlog.as_deref_mut() {
                None => events.remote_write(e.data, len),
                Some(held) => {
                    if !events.try_remote_write(e.data, len) {
                        held.extend_from_slice(&entries[i..]);
                        return Ok(());
                    }
                }
            }
            if ep.dom.rx_cq_data {
                ep.post_recv().map_err(RepostFailed)?;
            }
        } else if !e.op_context.is_null() {
            events.sent(e.op_context as u64);
        }
    }
    Ok(())
}

/// Describes why reading the completion queue returned `n` (an error).
fn cq_failure(ep: &EpInner, n: isize) -> String {
    if n != -(sys::FI_EAVAIL as isize) {
        return fi_error("fi_cq_read", n as i64).to_string();
    }
    let mut err = sys::fi_cq_err_entry::default();
    // SAFETY: the queue is open and `err` is a valid error entry to fill.
    let r = unsafe { sys::fi_cq_readerr(ep.cq, &mut err, 0) };
    let mut text = [0 as libc::c_char; 256];
    let detail = if r > 0 {
        // SAFETY: the queue is open; the provider writes at most `text.len()` bytes into
        // `text` and returns a NUL-terminated string (ours or its own).
        unsafe {
            let p = sys::fi_cq_strerror(
                ep.cq,
                err.prov_errno,
                err.err_data,
                text.as_mut_ptr(),
                text.len(),
            );
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    } else {
        String::new()
    };
    format!("{} ({detail})", fi_error("completion", -i64::from(err.err)))
}

impl Transport for Lf {
    type Mr = LfMr;
    type Endpoint = LfEndpoint;
    type Pending = LfPending;

    fn name(&self) -> &'static str {
        "libfabric"
    }

    fn reports_len(&self) -> bool {
        // The CQ entry's `len` is only defined for receives (fi_cq(3)); `tcp` leaves it 0.
        false
    }

    fn writes_land_passively(&self) -> bool {
        // On `verbs` the NIC writes memory by itself; software providers such as `tcp` apply
        // a write only while this process drives their progress.
        self.dom.provider.split(';').next() == Some("verbs")
    }

    fn poll_progress(ep: &LfEndpoint) -> bool {
        ep.poll_progress()
    }

    fn register(&self, region: &Region) -> Result<Registered<LfMr>, FabricError> {
        let requested = self.next_key.fetch_add(1, Ordering::Relaxed);
        let len = region.len().max(8);
        let mut mr: *mut sys::fid_mr = std::ptr::null_mut();
        // SAFETY: the region's memory is valid for `len` bytes (regions allocate at least one
        // word) and outlives the registration: the fabric drops the registration before the
        // region's last handle in its table.
        let ret = unsafe {
            sys::fi_mr_reg(
                self.dom.domain,
                region.as_ptr().cast::<c_void>(),
                len,
                u64::from(sys::FI_WRITE | sys::FI_REMOTE_WRITE),
                0,
                requested,
                0,
                &mut mr,
                std::ptr::null_mut(),
            )
        };
        check("fi_mr_reg", ret)?;
        // SAFETY: `mr` is a fresh, open registration.
        let (rkey, desc) = unsafe { (sys::fi_mr_key(mr), sys::fi_mr_desc(mr)) };
        let addr = if self.dom.mr_mode & u64::from(sys::FI_MR_VIRT_ADDR) != 0 {
            region.as_ptr() as u64
        } else {
            0
        };
        Ok(Registered {
            mr: LfMr {
                mr,
                desc,
                _dom: Arc::clone(&self.dom),
            },
            rkey,
            addr,
        })
    }

    fn dial_prepare(&self, _peer: NodeId) -> Result<(LfPending, Vec<u8>), FabricError> {
        let mut ep = EpInner::new(&self.dom)?;
        ep.open_endpoint(self.dom.info)?;
        Ok((LfPending::Dial(ep), Vec::new()))
    }

    fn accept_prepare(
        &self,
        _peer: NodeId,
        _hello: &[u8],
    ) -> Result<(LfPending, Vec<u8>), FabricError> {
        let mut ep = EpInner::new(&self.dom)?;
        let mut name = vec![0u8; 512];
        let mut len = name.len();
        // SAFETY: the fabric is open and `info` valid; the passive endpoint is bound to the
        // link's event queue and closed by EpInner's Drop; `name` has room for `len` bytes.
        unsafe {
            check(
                "fi_passive_ep",
                sys::fi_passive_ep(
                    self.dom.fabric,
                    self.dom.info,
                    &mut ep.pep,
                    std::ptr::null_mut(),
                ),
            )?;
            check(
                "fi_pep_bind",
                sys::fi_pep_bind(ep.pep, &mut (*ep.eq).fid, 0),
            )?;
            check("fi_listen", sys::fi_listen(ep.pep))?;
            check(
                "fi_getname",
                sys::fi_getname(
                    &mut (*ep.pep).fid,
                    name.as_mut_ptr().cast::<c_void>(),
                    &mut len,
                ),
            )?;
        }
        name.truncate(len);
        Ok((LfPending::Accept(ep), name))
    }

    fn establish(
        &self,
        pending: LfPending,
        welcome: Option<&[u8]>,
        timeout: Duration,
        events: Arc<dyn Events>,
    ) -> Result<LfEndpoint, FabricError> {
        let ep = match pending {
            LfPending::Dial(ep) => {
                let name = welcome.unwrap_or_default();
                if name.is_empty() {
                    return Err(fi_error("fi_connect: no peer name", -22));
                }
                // SAFETY: the endpoint is enabled; `name` is the peer's passive endpoint name
                // as produced by fi_getname, valid across the call.
                check("fi_connect", unsafe {
                    sys::fi_connect(ep.ep, name.as_ptr().cast::<c_void>(), std::ptr::null(), 0)
                })?;
                ep.wait_event(sys::FI_CONNECTED, timeout)?;
                ep
            }
            LfPending::Accept(mut ep) => {
                let req = ep.wait_event(sys::FI_CONNREQ, timeout)?;
                let opened = ep.open_endpoint(req.info);
                // SAFETY: the connection request's info is ours to free, once, after the
                // endpoint was created from it.
                unsafe { sys::fi_freeinfo(req.info) };
                opened?;
                // SAFETY: the endpoint was created from the connection request and enabled.
                check("fi_accept", unsafe {
                    sys::fi_accept(ep.ep, std::ptr::null(), 0)
                })?;
                ep.wait_event(sys::FI_CONNECTED, timeout)?;
                // The passive endpoint served its one connection.
                // SAFETY: the passive endpoint is open and no longer used.
                unsafe { close(&mut (*ep.pep).fid) };
                ep.pep = std::ptr::null_mut();
                ep
            }
        };
        let inner = Arc::new(ep);
        let for_thread = Arc::clone(&inner);
        let for_events = Arc::clone(&events);
        let thread = std::thread::Builder::new()
            .name("libfabric-progress".into())
            .spawn(move || progress_loop(for_thread, events))
            .map_err(|e| FabricError::io("spawning the progress thread", e))?;
        Ok(LfEndpoint {
            inner,
            events: for_events,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn post(&self, ep: &LfEndpoint, w: &Post<'_, LfMr>) -> Result<(), PostError> {
        let mut iov = sys::iovec {
            iov_base: w.local as *mut c_void,
            iov_len: w.len,
        };
        let mut desc = match w.mr {
            Some(mr) if self.dom.mr_mode & u64::from(sys::FI_MR_LOCAL) != 0 => mr.desc,
            _ => std::ptr::null_mut(),
        };
        let mut rma = sys::fi_rma_iov {
            addr: w.remote_addr,
            len: w.len,
            key: w.rkey,
        };
        let msg = sys::fi_msg_rma {
            msg_iov: &mut iov,
            desc: &mut desc,
            iov_count: 1,
            addr: 0,
            rma_iov: &mut rma,
            rma_iov_count: 1,
            context: w.ticket as usize as *mut c_void,
            data: w.data,
        };
        // Only signaled writes ask for a completion (the endpoint's queue is bound with
        // FI_SELECTIVE_COMPLETION): with delivery completion, it arrives once the target has
        // applied the write, and so, writes being applied in order, every earlier one.
        let mut flags = u64::from(sys::FI_REMOTE_CQ_DATA);
        if w.len <= self.dom.inject_size {
            flags |= u64::from(sys::FI_INJECT);
        }
        if w.signaled {
            flags |= u64::from(sys::FI_COMPLETION | sys::FI_DELIVERY_COMPLETE);
        }
        // SAFETY: the endpoint is connected; `msg` and everything it points to live across the
        // call; the source bytes lie in a registered region (checked by the caller) that stays
        // registered until the write completes or, with FI_INJECT, are copied right away.
        let ret = unsafe { sys::fi_writemsg(ep.inner.ep, &msg, flags) };
        if ret == 0 {
            Ok(())
        } else if ret == -(sys::FI_EAGAIN as isize) {
            Err(PostError::Full)
        } else {
            Err(PostError::Failed(
                fi_error("fi_writemsg", ret as i64).to_string(),
            ))
        }
    }

    fn close(&self, ep: &LfEndpoint) {
        ep.close();
    }
}

impl LfEndpoint {
    /// Reads the completion queue once without blocking and handles what it read, unless
    /// another thread is reading it (then that thread handles what arrived). Returns whether it
    /// handled anything.
    fn poll_progress(&self) -> bool {
        if self.inner.stop.load(Ordering::Relaxed) {
            return false;
        }
        self.inner.polls.fetch_add(1, Ordering::Relaxed);
        let mut entries = [sys::fi_cq_data_entry::default(); CQ_BATCH];
        let (drained, left) = {
            let mut backlog = match self.inner.drain.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                // The progress thread is reading; it handles what arrived.
                Err(TryLockError::WouldBlock) => return false,
            };
            if !backlog.is_empty() {
                // Entries are waiting for the progress thread; later ones must wait behind.
                return false;
            }
            let drained = drain_once(
                &self.inner,
                self.events.as_ref(),
                &mut entries,
                &mut backlog,
            );
            let left = !backlog.is_empty();
            if left {
                self.inner.backlogged.store(true, Ordering::SeqCst);
            }
            (drained, left)
        };
        if left {
            // SAFETY: the completion queue is open while `inner` lives; signaling wakes the
            // progress thread if it blocks on the queue, so it handles the entries left.
            unsafe { sys::fi_cq_signal(self.inner.cq) };
        }
        match drained {
            Drained::Some => true,
            Drained::Empty => false,
            Drained::Failed(reason) => {
                if !self.events.stopped() {
                    self.events.failed(reason);
                }
                true
            }
        }
    }

    fn close(&self) {
        if self.inner.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // SAFETY: the completion queue is open while `inner` lives; signaling wakes a thread
        // blocked in fi_cq_sread on it.
        unsafe { sys::fi_cq_signal(self.inner.cq) };
        rdma::join_progress_thread(&self.thread);
    }
}

impl Drop for LfEndpoint {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use crate::conformance::{Harness, Local};
    use crate::{RegionId, RegionSpec, WriteRequest};

    use super::LibfabricFabric;

    const WAIT: Duration = Duration::from_secs(5);

    /// A thread driving progress through `poll_progress`, next to the progress thread, sees a
    /// link's writes land and their notifications queued in issue order, also when a full
    /// notification queue makes it leave entries to the progress thread.
    #[test]
    fn polling_threads_drive_progress_in_order() {
        const N: u64 = 20_000;
        let h = Local::<LibfabricFabric>::new();
        let f = h.cluster(2);
        let src = f[0].register(RegionSpec::new(RegionId(1), 64)).unwrap();
        let dst = f[1]
            .register(RegionSpec::new(RegionId(1), 64).with_notify_capacity(4))
            .unwrap();
        let out = f[0].link(1).unwrap();
        let back = f[1].link(0).unwrap();
        let remote = out.remote_region(RegionId(1), WAIT).unwrap();
        let writer = std::thread::spawn(move || {
            for i in 1..=N {
                src.store_u64(0, i);
                out.write(&WriteRequest::mirrored(&src, &remote, 0, 8).with_imm(i as u32))
                    .unwrap();
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let (mut last, mut next_imm, mut polled, mut spins) = (0u64, 1u64, false, 0u64);
        while next_imm <= N {
            assert!(
                std::time::Instant::now() < deadline,
                "stuck at {last}/{next_imm}"
            );
            polled |= back.poll_progress();
            let v = dst.load_u64(0);
            assert!(v >= last, "write {v} landed after {last}");
            last = v;
            spins += 1;
            // Consume notifications slowly, so the queue is often full.
            if spins % 4 == 0 {
                if let Some(n) = dst.next_notification() {
                    assert_eq!((n.from, u64::from(n.imm), n.len), (0, next_imm, 8));
                    next_imm += 1;
                }
            }
        }
        writer.join().unwrap();
        assert_eq!(dst.load_u64(0), N);
        assert!(polled, "poll_progress never handled anything");
        assert!(back.failure().is_none());
    }

    /// Unsignaled writes carry no completion on this backend: a revocation and a signaled write
    /// into a revoked region still complete once the earlier writes are applied.
    #[test]
    fn completions_cover_unsignaled_writes() {
        let h = Local::<LibfabricFabric>::new();
        let f = h.cluster(2);
        let src = f[0].register(RegionSpec::new(RegionId(1), 4096)).unwrap();
        let gone = f[1].register(RegionSpec::new(RegionId(2), 4096)).unwrap();
        let kept = f[1].register(RegionSpec::new(RegionId(3), 4096)).unwrap();
        let l = f[0].link(1).unwrap();
        let r_gone = l.remote_region(RegionId(2), WAIT).unwrap();
        let r_kept = l.remote_region(RegionId(3), WAIT).unwrap();
        src.fill(0, 4096, 7).unwrap();

        // Unsignaled writes, then the owner revokes the region they went to: the revocation
        // waits for them (through a fence) before it returns.
        for i in 0..64 {
            l.write(&WriteRequest::new(&src, 0, &r_gone, (i % 8) * 512, 512))
                .unwrap();
        }
        f[1].deregister(RegionId(2)).unwrap();
        assert_eq!(
            gone.load_u8(4095),
            7,
            "revocation returned before the writes landed"
        );

        // Unsignaled writes to a live region, then a signaled write into the revoked one: it is
        // discarded, and completes once the earlier writes are applied.
        for i in 0..64 {
            l.write(&WriteRequest::new(&src, 0, &r_kept, (i % 8) * 512, 512))
                .unwrap();
        }
        let c = l
            .write_signaled(&WriteRequest::mirrored(&src, &r_gone, 0, 8))
            .unwrap();
        c.wait(WAIT).unwrap();
        assert_eq!(
            kept.load_u8(4095),
            7,
            "completion before the earlier writes landed"
        );
        assert!(l.failure().is_none());

        // The link still carries signaled writes.
        kept.store_u64(0, 0);
        src.store_u64(0, 99);
        l.write_signaled(&WriteRequest::mirrored(&src, &r_kept, 0, 8))
            .unwrap()
            .wait(WAIT)
            .unwrap();
        assert_eq!(kept.load_u64(0), 99);
    }
}
