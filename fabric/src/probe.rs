//! Diagnostic probes: an echo peer and a round-trip pinger over any fabric.
//!
//! The two sides each register [`PROBE_REGION`]. The pinger writes an increasing counter into the
//! word at offset 0 of the echo's region; the echo sees it and writes it back into the word at
//! offset 8 of the pinger's region. One exchange is one one-sided write round trip, the figure
//! the benchmarks compare with a plain socket ping-pong. The `fabric-probe` program and the
//! benchmarks are thin wrappers around these functions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{Fabric, FabricError, Link, Region, RegionId, RegionSpec, WriteRequest};

/// The region both probe sides register.
pub const PROBE_REGION: RegionId = RegionId(0x5052_4f42_4500_0001);

/// Offset of the word the pinger writes.
pub const PING_OFFSET: usize = 0;
/// Offset of the word the echo writes back.
pub const ECHO_OFFSET: usize = 8;
/// Where bulk data starts in the probe region.
pub const DATA_OFFSET: usize = 64;

/// How a probe waits for the next word to change.
#[derive(Clone, Copy, Debug)]
pub enum Wait {
    /// Spin on memory without parking (lowest latency, one busy core).
    Spin,
    /// Spin for the given time after the last change, then park on the region's doorbell.
    SpinThenPark(Duration),
}

/// Registers the probe region of `len` bytes (at least [`DATA_OFFSET`]).
pub fn register(fabric: &dyn Fabric, len: usize) -> Result<std::sync::Arc<Region>, FabricError> {
    fabric.register(RegionSpec::new(PROBE_REGION, len.max(DATA_OFFSET)))
}

/// Waits until the word at `off` differs from `old`, or `stop` is set, or `limit` passes.
///
/// While it spins it drives `link`'s progress between looks ([`Link::poll_progress`]), so on
/// backends whose writes land only while this process makes progress the awaited write lands
/// without waiting for the backend's thread; parked, it leaves that to the backend.
pub fn wait_change(
    region: &Region,
    link: &dyn Link,
    off: usize,
    old: u64,
    wait: Wait,
    stop: &AtomicBool,
    limit: Duration,
) -> Option<u64> {
    let start = Instant::now();
    let mut last_change = Instant::now();
    loop {
        let seen = region.doorbell().epoch();
        let v = region.load_u64(off);
        if v != old {
            return Some(v);
        }
        if stop.load(Ordering::Relaxed) || start.elapsed() >= limit {
            return None;
        }
        let spin = match wait {
            Wait::Spin => true,
            Wait::SpinThenPark(spin) => last_change.elapsed() < spin,
        };
        if !spin {
            region.doorbell().wait(seen, Duration::from_millis(100));
            last_change = Instant::now();
        } else if !link.poll_progress() {
            std::hint::spin_loop();
        }
    }
}

/// Echoes every new ping value back to the pinger until `stop` is set or the link fails.
pub fn echo(
    region: &Region,
    link: &dyn Link,
    wait: Wait,
    stop: &AtomicBool,
) -> Result<u64, FabricError> {
    let remote = link.remote_region(PROBE_REGION, Duration::from_secs(10))?;
    // Start from what was last echoed (0 for a fresh region), not from the current ping: a ping
    // that lands before this line must still be answered.
    let mut last = region.load_u64(ECHO_OFFSET);
    let mut echoed = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(reason) = link.failure() {
            return Err(FabricError::LinkFailed {
                peer: link.peer(),
                reason,
            });
        }
        let Some(v) = wait_change(
            region,
            link,
            PING_OFFSET,
            last,
            wait,
            stop,
            Duration::from_secs(1),
        ) else {
            continue;
        };
        last = v;
        region.store_u64(ECHO_OFFSET, v);
        link.write(&WriteRequest::mirrored(region, &remote, ECHO_OFFSET, 8))?;
        echoed += 1;
    }
    Ok(echoed)
}

/// Runs `rounds` ping round trips and returns each one's duration.
pub fn ping(
    region: &Region,
    link: &dyn Link,
    rounds: usize,
    wait: Wait,
) -> Result<Vec<Duration>, FabricError> {
    let remote = link.remote_region(PROBE_REGION, Duration::from_secs(10))?;
    let never = AtomicBool::new(false);
    let mut times = Vec::with_capacity(rounds);
    let mut value = region.load_u64(ECHO_OFFSET);
    for _ in 0..rounds {
        value += 1;
        let start = Instant::now();
        region.store_u64(PING_OFFSET, value);
        link.write(&WriteRequest::mirrored(region, &remote, PING_OFFSET, 8))?;
        let mut seen = region.load_u64(ECHO_OFFSET);
        while seen != value {
            seen = wait_change(
                region,
                link,
                ECHO_OFFSET,
                seen,
                wait,
                &never,
                Duration::from_secs(10),
            )
            .ok_or_else(|| FabricError::Timeout {
                what: format!("echo of ping {value} from node {}", link.peer()),
                after: Duration::from_secs(10),
            })?;
        }
        times.push(start.elapsed());
    }
    Ok(times)
}

/// Streams `total` bytes as writes of `write_len` bytes into the peer's probe region (cycling
/// over its data area), ends with a signaled write, and returns the elapsed time once that
/// write is acknowledged.
pub fn stream(
    region: &Region,
    link: &dyn Link,
    write_len: usize,
    total: usize,
) -> Result<Duration, FabricError> {
    let remote = link.remote_region(PROBE_REGION, Duration::from_secs(10))?;
    let area = remote
        .len
        .saturating_sub(DATA_OFFSET)
        .min(region.len().saturating_sub(DATA_OFFSET));
    if write_len == 0 || area < write_len {
        return Err(FabricError::InvalidRegion(format!(
            "probe regions need {write_len} data bytes, have {area}"
        )));
    }
    let slots = area / write_len;
    let writes = total.div_ceil(write_len).max(1);
    let start = Instant::now();
    for i in 0..writes {
        let off = DATA_OFFSET + (i % slots) * write_len;
        let req = WriteRequest::mirrored(region, &remote, off, write_len);
        if i + 1 == writes {
            link.write_signaled(&req)?.wait(Duration::from_secs(60))?;
        } else {
            link.write(&req)?;
        }
    }
    Ok(start.elapsed())
}
