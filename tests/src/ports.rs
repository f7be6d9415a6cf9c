//! Ports for test and benchmark processes on 127.0.0.1.

/// A port on 127.0.0.1 that is free now, chosen below the kernel's ephemeral range (which
/// outgoing connections draw from, so a port taken from it may be gone by the time a child
/// binds it). Distinct calls in one process return distinct ports.
pub fn listen_port() -> Result<u16, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    // The window below the ephemeral range (or above it, if it starts low).
    let (from, to) = if low > 12000 {
        (10000, low)
    } else {
        (high + 1, 65535)
    };
    let span = to.saturating_sub(from).max(1);
    // One seed per process: with a fresh one per call, two calls could land on the same
    // port (both free when checked, then bound by two children).
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        std::process::id().wrapping_mul(2_654_435_761)
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()))
    });
    for _ in 0..1000 {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = from + (seed.wrapping_add(k.wrapping_mul(7919)) % span);
        if let Ok(port) = u16::try_from(port) {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Err("no free port found below the ephemeral range".into())
}

/// The configuration of member `id` of an in-process test group on 127.0.0.1 whose contact
/// (member 0) listens on `contact`: free ports, a 50 ms heartbeat and 64 KiB P2P payloads.
pub fn local_member(id: u32, contact: u16) -> Result<derecho::Config, String> {
    let mut c = derecho::Config::default();
    let d = &mut c.derecho;
    d.local_id = id;
    d.contact_port = contact;
    d.gms_port = if id == 0 { contact } else { listen_port()? };
    d.sst_port = listen_port()?;
    d.state_transfer_port = listen_port()?;
    d.external_port = listen_port()?;
    d.heartbeat_ms = 50;
    d.max_p2p_request_payload_size = 64 << 10;
    d.max_p2p_reply_payload_size = 64 << 10;
    Ok(c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn calls_in_one_process_return_distinct_ports() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let port = super::listen_port().unwrap_or(0);
            assert!(port != 0 && seen.insert(port), "port {port} returned twice");
        }
    }
}
