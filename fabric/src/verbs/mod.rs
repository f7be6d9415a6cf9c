//! The raw ibverbs backend (cargo feature `verbs`): reliable-connected queue pairs and one-sided
//! RDMA writes on an RDMA NIC, without libfabric in between.
//!
//! The side channel, lookups, revocation and failure reporting are the shared RDMA-style layer
//! (`crate::rdma`); this module is the transport underneath:
//!
//! * one device context and protection domain per process (`[RDMA] domain` names the device;
//!   empty or `lo` takes the first); every region is registered with `ibv_reg_mr` for local and
//!   remote write, and peers address it by virtual address and rkey;
//! * per link: a completion channel, a completion queue and an RC queue pair. The hello and
//!   welcome carry each side's queue pair number, first packet sequence number, LID and GID; each
//!   side then moves its queue pair through INIT, RTR and RTS;
//! * a write is an `IBV_WR_RDMA_WRITE` followed, in the same post, by a 16-byte inline
//!   `IBV_WR_SEND` that carries the 64-bit completion data of `crate::rdma` and the write's
//!   length. An RC queue pair executes both in order, so when the target's receive completes the
//!   bytes are in place; the send is signaled, and its completion (acknowledged by the target)
//!   completes the write. (The verbs immediate has 32 bits, too few for a region handle and the
//!   contract's 32-bit immediate together; the send carries both.)
//! * a progress thread per link waits on the completion channel and polls the completion queue:
//!   receives become doorbell rings and notifications (and are reposted), sends become
//!   completed tickets.
//!
//! On a machine without an RDMA device, starting the backend fails with an error that names the
//! configuration key to change (`[RDMA] backend`). All `unsafe` code of the backend is in this
//! module and `sys`.

pub(crate) mod sys;

use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backends::VerbsConfig;
use crate::rdma::{self, Common, Events, Post, PostError, RdmaFabric, Registered, Transport};
use crate::{FabricError, NodeId, Region};

/// Bytes of one notice (completion data and length) sent after each write.
const NOTICE: usize = 16;
/// Completions polled at once.
const CQ_BATCH: usize = 16;
/// Largest inline write payload asked of the queue pair.
const MAX_INLINE: u32 = 64;

/// A fabric over raw ibverbs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct VerbsFabric(RdmaFabric<Verbs>);

rdma::delegate_fabric!(VerbsFabric);

impl VerbsFabric {
    /// Opens the RDMA device, binds the side channel and starts accepting peers. Fails with an
    /// error naming `[RDMA] backend` when the host has no RDMA device.
    pub fn start(config: VerbsConfig) -> Result<Self, FabricError> {
        let transport = Verbs::open(&config)?;
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

fn os_error(what: &str, err: std::io::Error) -> FabricError {
    FabricError::io(format!("ibverbs {what}"), err)
}

fn no_device(detail: String) -> FabricError {
    FabricError::io(
        format!(
            "no usable RDMA device for the verbs backend ({detail}); on a host without RDMA \
             hardware set [RDMA] backend = tcp, shm or libfabric"
        ),
        std::io::Error::from(std::io::ErrorKind::NotFound),
    )
}

/// The process's device context and protection domain.
struct Device {
    ctx: *mut sys::ibv_context,
    pd: *mut sys::ibv_pd,
    port: u8,
    lid: u16,
    gid: [u8; 16],
    gid_index: u8,
    mtu: sys::ibv_mtu,
    tx_depth: u32,
    rx_depth: u32,
}

// SAFETY: ibverbs objects may be used from any thread (the library locks internally); they are
// released once, in Drop.
unsafe impl Send for Device {}
// SAFETY: as above.
unsafe impl Sync for Device {}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every queue pair and registration holds an Arc<Device>, so none is left;
        // the protection domain goes before its context.
        unsafe {
            sys::ibv_dealloc_pd(self.pd);
            sys::ibv_close_device(self.ctx);
        }
    }
}

/// The verbs transport.
pub(crate) struct Verbs {
    dev: Arc<Device>,
}

impl Verbs {
    fn open(c: &VerbsConfig) -> Result<Self, FabricError> {
        let mut n: i32 = 0;
        // SAFETY: ibv_get_device_list writes the count and returns a NULL-terminated array
        // (or NULL), freed below with ibv_free_device_list.
        let list = unsafe { sys::ibv_get_device_list(&mut n) };
        if list.is_null() {
            return Err(no_device(format!(
                "ibv_get_device_list: {}",
                std::io::Error::last_os_error()
            )));
        }
        let want = c.device.trim();
        let any = want.is_empty() || want == "lo";
        let mut chosen: *mut sys::ibv_device = std::ptr::null_mut();
        let mut names = Vec::new();
        for i in 0..usize::try_from(n).unwrap_or(0) {
            // SAFETY: `list` has `n` valid entries.
            let d = unsafe { *list.add(i) };
            if d.is_null() {
                break;
            }
            // SAFETY: `d` is a valid device; its name is a NUL-terminated string it owns.
            let name = unsafe { CStr::from_ptr(sys::ibv_get_device_name(d)) }
                .to_string_lossy()
                .into_owned();
            if chosen.is_null() && (any || name == want) {
                chosen = d;
            }
            names.push(name);
        }
        let opened = if chosen.is_null() {
            Err(no_device(if names.is_empty() {
                "the host has none".to_string()
            } else {
                format!(
                    "device {want:?} not found among {}; set [RDMA] domain",
                    names.join(", ")
                )
            }))
        } else {
            // SAFETY: `chosen` is a device of the live list.
            let ctx = unsafe { sys::ibv_open_device(chosen) };
            if ctx.is_null() {
                Err(os_error("ibv_open_device", std::io::Error::last_os_error()))
            } else {
                Ok(ctx)
            }
        };
        // SAFETY: the list came from ibv_get_device_list; opened contexts stay valid.
        unsafe { sys::ibv_free_device_list(list) };
        let ctx = opened?;
        // SAFETY: `ctx` is an open device context; the out-structures live across the calls;
        // on error the context (and protection domain) are released.
        unsafe {
            let pd = sys::ibv_alloc_pd(ctx);
            if pd.is_null() {
                let e = std::io::Error::last_os_error();
                sys::ibv_close_device(ctx);
                return Err(os_error("ibv_alloc_pd", e));
            }
            let mut port = sys::ibv_port_attr::default();
            let r = sys::___ibv_query_port(ctx, c.port, &mut port);
            let mut gid = sys::ibv_gid::default();
            let g = if r == 0 {
                sys::ibv_query_gid(ctx, c.port, i32::from(c.gid_index), &mut gid)
            } else {
                r
            };
            if r != 0 || g != 0 {
                sys::ibv_dealloc_pd(pd);
                sys::ibv_close_device(ctx);
                return Err(os_error(
                    &format!("querying port {} / gid {}", c.port, c.gid_index),
                    std::io::Error::from_raw_os_error(if r != 0 { r } else { g }),
                ));
            }
            Ok(Self {
                dev: Arc::new(Device {
                    ctx,
                    pd,
                    port: c.port,
                    lid: port.lid,
                    gid: gid.raw,
                    gid_index: c.gid_index,
                    mtu: port.active_mtu,
                    tx_depth: c.tx_depth.max(1),
                    rx_depth: c.rx_depth.max(1),
                }),
            })
        }
    }
}

/// A memory registration.
pub(crate) struct VMr {
    mr: *mut sys::ibv_mr,
    lkey: u32,
    _dev: Arc<Device>,
}

// SAFETY: a registration may be used from any thread; it is released once, in Drop.
unsafe impl Send for VMr {}
// SAFETY: as above.
unsafe impl Sync for VMr {}

impl Drop for VMr {
    fn drop(&mut self) {
        // SAFETY: the registration is live and no longer used.
        unsafe { sys::ibv_dereg_mr(self.mr) };
    }
}

/// What one side tells the other about its queue pair.
#[derive(Clone, Copy, Debug, Default)]
struct QpInfo {
    qpn: u32,
    psn: u32,
    lid: u16,
    gid: [u8; 16],
}

impl QpInfo {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(26);
        v.extend_from_slice(&self.qpn.to_le_bytes());
        v.extend_from_slice(&self.psn.to_le_bytes());
        v.extend_from_slice(&self.lid.to_le_bytes());
        v.extend_from_slice(&self.gid);
        v
    }

    fn decode(b: &[u8]) -> Result<Self, FabricError> {
        if b.len() < 26 {
            return Err(FabricError::Connect {
                peer: 0,
                reason: format!("queue pair data of {} bytes", b.len()),
            });
        }
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[10..26]);
        Ok(Self {
            qpn: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            psn: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            lid: u16::from_le_bytes([b[8], b[9]]),
            gid,
        })
    }
}

/// One link's queue pair, completion queue and receive buffers.
pub(crate) struct Qp {
    dev: Arc<Device>,
    chan: *mut sys::ibv_comp_channel,
    cq: *mut sys::ibv_cq,
    qp: *mut sys::ibv_qp,
    rx: Box<[u64]>,
    rx_mr: *mut sys::ibv_mr,
    psn: u32,
    stop: AtomicBool,
}

// SAFETY: ibverbs objects may be used from any thread; they are released once, in Drop.
unsafe impl Send for Qp {}
// SAFETY: as above; the receive buffers are written only by the device and read by the
// progress thread after the matching completion.
unsafe impl Sync for Qp {}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: the progress thread has exited (it holds an Arc of this); resources are
        // released in dependency order, each once.
        unsafe {
            if !self.qp.is_null() {
                sys::ibv_destroy_qp(self.qp);
            }
            if !self.rx_mr.is_null() {
                sys::ibv_dereg_mr(self.rx_mr);
            }
            if !self.cq.is_null() {
                sys::ibv_destroy_cq(self.cq);
            }
            if !self.chan.is_null() {
                sys::ibv_destroy_comp_channel(self.chan);
            }
        }
    }
}

impl Qp {
    fn new(dev: &Arc<Device>) -> Result<Self, FabricError> {
        let slots = dev.rx_depth as usize;
        let mut me = Qp {
            dev: Arc::clone(dev),
            chan: std::ptr::null_mut(),
            cq: std::ptr::null_mut(),
            qp: std::ptr::null_mut(),
            rx: vec![0u64; slots * NOTICE / 8].into_boxed_slice(),
            rx_mr: std::ptr::null_mut(),
            psn: (std::process::id() ^ 0x5a5a) & 0x00ff_ffff,
            stop: AtomicBool::new(false),
        };
        let last = || std::io::Error::last_os_error();
        // SAFETY: the device context and protection domain are open; each object created here
        // is released by Qp's Drop if a later step fails; `rx` lives as long as `me`.
        unsafe {
            me.chan = sys::ibv_create_comp_channel(dev.ctx);
            if me.chan.is_null() {
                return Err(os_error("ibv_create_comp_channel", last()));
            }
            let fd = (*me.chan).fd;
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            let depth = (2 * dev.tx_depth + dev.rx_depth) as i32;
            me.cq = sys::ibv_create_cq(dev.ctx, depth, std::ptr::null_mut(), me.chan, 0);
            if me.cq.is_null() {
                return Err(os_error("ibv_create_cq", last()));
            }
            me.rx_mr = sys::__ibv_reg_mr(
                dev.pd,
                me.rx.as_mut_ptr().cast::<c_void>(),
                me.rx.len() * 8,
                sys::IBV_ACCESS_LOCAL_WRITE,
                0,
            );
            if me.rx_mr.is_null() {
                return Err(os_error("registering receive buffers", last()));
            }
            let mut init = sys::ibv_qp_init_attr {
                send_cq: me.cq,
                recv_cq: me.cq,
                qp_type: sys::IBV_QPT_RC,
                ..Default::default()
            };
            init.cap.max_send_wr = 2 * dev.tx_depth;
            init.cap.max_recv_wr = dev.rx_depth;
            init.cap.max_send_sge = 1;
            init.cap.max_recv_sge = 1;
            init.cap.max_inline_data = MAX_INLINE;
            me.qp = sys::ibv_create_qp(dev.pd, &mut init);
            if me.qp.is_null() {
                return Err(os_error("ibv_create_qp", last()));
            }
            let mut attr = sys::ibv_qp_attr {
                qp_state: sys::IBV_QPS_INIT,
                pkey_index: 0,
                port_num: dev.port,
                qp_access_flags: sys::IBV_ACCESS_REMOTE_WRITE | sys::IBV_ACCESS_LOCAL_WRITE,
                ..Default::default()
            };
            let mask = sys::IBV_QP_STATE
                | sys::IBV_QP_PKEY_INDEX
                | sys::IBV_QP_PORT
                | sys::IBV_QP_ACCESS_FLAGS;
            let r = sys::ibv_modify_qp(me.qp, &mut attr, mask as i32);
            if r != 0 {
                return Err(os_error(
                    "moving the queue pair to INIT",
                    std::io::Error::from_raw_os_error(r),
                ));
            }
        }
        for slot in 0..slots {
            me.post_recv(slot)?;
        }
        Ok(me)
    }

    fn info(&self) -> QpInfo {
        QpInfo {
            // SAFETY: the queue pair is live.
            qpn: unsafe { (*self.qp).qp_num },
            psn: self.psn,
            lid: self.dev.lid,
            gid: self.dev.gid,
        }
    }

    fn post_recv(&self, slot: usize) -> Result<(), FabricError> {
        // SAFETY: the slot lies inside `rx`, which is registered with `rx_mr` and outlives the
        // queue pair; the work request lives across the call.
        unsafe {
            let mut sge = sys::ibv_sge {
                addr: self.rx.as_ptr().add(slot * NOTICE / 8) as u64,
                length: NOTICE as u32,
                lkey: (*self.rx_mr).lkey,
            };
            let mut wr = sys::ibv_recv_wr {
                wr_id: slot as u64,
                sg_list: &mut sge,
                num_sge: 1,
                ..Default::default()
            };
            let mut bad: *mut sys::ibv_recv_wr = std::ptr::null_mut();
            let r = sys::ibv_post_recv(self.qp, &mut wr, &mut bad);
            if r != 0 {
                return Err(os_error(
                    "ibv_post_recv",
                    std::io::Error::from_raw_os_error(r),
                ));
            }
        }
        Ok(())
    }

    /// Moves the queue pair to RTR towards `peer`, then to RTS.
    fn connect(&self, peer: &QpInfo) -> Result<(), FabricError> {
        // SAFETY: the queue pair is live and in INIT; the attribute structs live across the
        // calls.
        unsafe {
            let mut attr = sys::ibv_qp_attr {
                qp_state: sys::IBV_QPS_RTR,
                path_mtu: self.dev.mtu,
                dest_qp_num: peer.qpn,
                rq_psn: peer.psn,
                max_dest_rd_atomic: 1,
                min_rnr_timer: 12,
                ..Default::default()
            };
            attr.ah_attr.dlid = peer.lid;
            attr.ah_attr.port_num = self.dev.port;
            if peer.gid.iter().any(|&b| b != 0) {
                attr.ah_attr.is_global = 1;
                attr.ah_attr.grh.dgid.raw = peer.gid;
                attr.ah_attr.grh.sgid_index = self.dev.gid_index;
                attr.ah_attr.grh.hop_limit = 1;
            }
            let mask = sys::IBV_QP_STATE
                | sys::IBV_QP_AV
                | sys::IBV_QP_PATH_MTU
                | sys::IBV_QP_DEST_QPN
                | sys::IBV_QP_RQ_PSN
                | sys::IBV_QP_MAX_DEST_RD_ATOMIC
                | sys::IBV_QP_MIN_RNR_TIMER;
            let r = sys::ibv_modify_qp(self.qp, &mut attr, mask as i32);
            if r != 0 {
                return Err(os_error(
                    "moving the queue pair to RTR",
                    std::io::Error::from_raw_os_error(r),
                ));
            }
            let mut attr = sys::ibv_qp_attr {
                qp_state: sys::IBV_QPS_RTS,
                timeout: 14,
                retry_cnt: 7,
                rnr_retry: 7,
                sq_psn: self.psn,
                max_rd_atomic: 1,
                ..Default::default()
            };
            let mask = sys::IBV_QP_STATE
                | sys::IBV_QP_TIMEOUT
                | sys::IBV_QP_RETRY_CNT
                | sys::IBV_QP_RNR_RETRY
                | sys::IBV_QP_SQ_PSN
                | sys::IBV_QP_MAX_QP_RD_ATOMIC;
            let r = sys::ibv_modify_qp(self.qp, &mut attr, mask as i32);
            if r != 0 {
                return Err(os_error(
                    "moving the queue pair to RTS",
                    std::io::Error::from_raw_os_error(r),
                ));
            }
        }
        Ok(())
    }

    /// The notice in receive slot `slot` (after its completion).
    fn notice(&self, slot: usize) -> (u64, u64) {
        let i = slot * NOTICE / 8;
        (self.rx[i], self.rx[i + 1])
    }
}

/// A connected queue pair and its progress thread.
pub(crate) struct VEndpoint {
    qp: Arc<Qp>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl VEndpoint {
    fn close(&self) {
        if self.qp.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        rdma::join_progress_thread(&self.thread);
    }
}

impl Drop for VEndpoint {
    fn drop(&mut self) {
        self.close();
    }
}

fn progress_loop(qp: Arc<Qp>, events: Arc<dyn Events>) {
    let mut wcs = [sys::ibv_wc::default(); CQ_BATCH];
    loop {
        if qp.stop.load(Ordering::SeqCst) || events.stopped() {
            return;
        }
        // SAFETY: the completion queue is live while `qp` lives; `wcs` has room for CQ_BATCH
        // work completions.
        let n = unsafe { sys::ibv_poll_cq(qp.cq, CQ_BATCH as i32, wcs.as_mut_ptr()) };
        if n < 0 {
            events.failed("ibv_poll_cq failed".into());
            return;
        }
        for wc in &wcs[..n as usize] {
            if wc.status != sys::IBV_WC_SUCCESS {
                // SAFETY: ibv_wc_status_str returns a static string for any status.
                let text = unsafe { CStr::from_ptr(sys::ibv_wc_status_str(wc.status)) };
                events.failed(format!("work completion: {}", text.to_string_lossy()));
                return;
            }
            if wc.opcode == sys::IBV_WC_RECV {
                let slot = wc.wr_id as usize;
                let (data, len) = qp.notice(slot);
                events.remote_write(data, Some(len as usize));
                if let Err(e) = qp.post_recv(slot) {
                    events.failed(e.to_string());
                    return;
                }
            } else if wc.opcode == sys::IBV_WC_SEND && wc.wr_id != 0 {
                events.sent(wc.wr_id);
            }
        }
        if n > 0 {
            continue;
        }
        // Nothing queued: arm the notification, check once more, then sleep on the channel.
        // SAFETY: the completion queue and channel are live.
        unsafe {
            sys::ibv_req_notify_cq(qp.cq, 0);
            let n = sys::ibv_poll_cq(qp.cq, 0, wcs.as_mut_ptr());
            // Unused: this poll asks for no entries. The loop polls the queue again after the
            // wait below, which is bounded (200 ms).
            let _ = n;
            let mut pfd = libc::pollfd {
                fd: (*qp.chan).fd,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut pfd, 1, 200) > 0 {
                let mut cq: *mut sys::ibv_cq = std::ptr::null_mut();
                let mut ctx: *mut c_void = std::ptr::null_mut();
                if sys::ibv_get_cq_event(qp.chan, &mut cq, &mut ctx) == 0 {
                    sys::ibv_ack_cq_events(cq, 1);
                }
            }
        }
    }
}

/// A queue pair being connected.
pub(crate) struct VPending {
    qp: Qp,
    /// The accepting side connects in `accept_prepare`; the dialing side in `establish`.
    connected: bool,
}

impl Transport for Verbs {
    type Mr = VMr;
    type Endpoint = VEndpoint;
    type Pending = VPending;

    fn name(&self) -> &'static str {
        "verbs"
    }

    fn reports_len(&self) -> bool {
        true
    }

    fn writes_land_passively(&self) -> bool {
        // The NIC writes registered memory by itself.
        true
    }

    fn register(&self, region: &Region) -> Result<Registered<VMr>, FabricError> {
        let access = sys::IBV_ACCESS_LOCAL_WRITE | sys::IBV_ACCESS_REMOTE_WRITE;
        // SAFETY: the region's memory is valid for at least `max(len, 8)` bytes and outlives
        // the registration (the fabric drops it before the region's last table handle).
        let mr = unsafe {
            sys::__ibv_reg_mr(
                self.dev.pd,
                region.as_ptr().cast::<c_void>(),
                region.len().max(8),
                access,
                0,
            )
        };
        if mr.is_null() {
            return Err(os_error("ibv_reg_mr", std::io::Error::last_os_error()));
        }
        // SAFETY: `mr` is a fresh registration.
        let (lkey, rkey) = unsafe { ((*mr).lkey, (*mr).rkey) };
        Ok(Registered {
            mr: VMr {
                mr,
                lkey,
                _dev: Arc::clone(&self.dev),
            },
            rkey: u64::from(rkey),
            addr: region.as_ptr() as u64,
        })
    }

    fn dial_prepare(&self, _peer: NodeId) -> Result<(VPending, Vec<u8>), FabricError> {
        let qp = Qp::new(&self.dev)?;
        let info = qp.info().encode();
        Ok((
            VPending {
                qp,
                connected: false,
            },
            info,
        ))
    }

    fn accept_prepare(
        &self,
        _peer: NodeId,
        hello: &[u8],
    ) -> Result<(VPending, Vec<u8>), FabricError> {
        let peer = QpInfo::decode(hello)?;
        let qp = Qp::new(&self.dev)?;
        qp.connect(&peer)?;
        let info = qp.info().encode();
        Ok((
            VPending {
                qp,
                connected: true,
            },
            info,
        ))
    }

    fn establish(
        &self,
        pending: VPending,
        welcome: Option<&[u8]>,
        _timeout: Duration,
        events: Arc<dyn Events>,
    ) -> Result<VEndpoint, FabricError> {
        if !pending.connected {
            let peer = QpInfo::decode(welcome.unwrap_or_default())?;
            pending.qp.connect(&peer)?;
        }
        let qp = Arc::new(pending.qp);
        let for_thread = Arc::clone(&qp);
        let thread = std::thread::Builder::new()
            .name("verbs-progress".into())
            .spawn(move || progress_loop(for_thread, events))
            .map_err(|e| FabricError::io("spawning the progress thread", e))?;
        Ok(VEndpoint {
            qp,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn post(&self, ep: &VEndpoint, w: &Post<'_, VMr>) -> Result<(), PostError> {
        let notice: [u64; 2] = [w.data, w.len as u64];
        // SAFETY: the queue pair is in RTS; the work requests, scatter entries and `notice`
        // live across the call (the notice is inline, so it is copied by the post); the source
        // bytes lie in a registered region that stays registered until the write completes
        // (or, inline, are copied right away).
        let r = unsafe {
            let mut notice_sge = sys::ibv_sge {
                addr: notice.as_ptr() as u64,
                length: NOTICE as u32,
                lkey: 0,
            };
            let mut send = sys::ibv_send_wr {
                wr_id: w.ticket,
                sg_list: &mut notice_sge,
                num_sge: 1,
                opcode: sys::IBV_WR_SEND,
                send_flags: sys::IBV_SEND_INLINE | sys::IBV_SEND_SIGNALED,
                ..Default::default()
            };
            let mut data_sge = sys::ibv_sge {
                addr: w.local as u64,
                length: w.len as u32,
                lkey: w.mr.map_or(0, |mr| mr.lkey),
            };
            let mut write = sys::ibv_send_wr {
                wr_id: 0,
                next: &mut send,
                sg_list: &mut data_sge,
                num_sge: i32::from(w.len > 0),
                opcode: sys::IBV_WR_RDMA_WRITE,
                send_flags: if w.len as u32 <= MAX_INLINE {
                    sys::IBV_SEND_INLINE
                } else {
                    0
                },
                ..Default::default()
            };
            write.wr.rdma.remote_addr = w.remote_addr;
            write.wr.rdma.rkey = w.rkey as u32;
            let mut bad: *mut sys::ibv_send_wr = std::ptr::null_mut();
            sys::ibv_post_send(ep.qp.qp, &mut write, &mut bad)
        };
        match r {
            0 => Ok(()),
            libc::ENOMEM | libc::EAGAIN => Err(PostError::Full),
            e => Err(PostError::Failed(format!(
                "ibv_post_send: {}",
                std::io::Error::from_raw_os_error(e)
            ))),
        }
    }

    fn close(&self, ep: &VEndpoint) {
        ep.close();
    }
}
