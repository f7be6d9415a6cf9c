//! The shared conformance suite on the shm backend, with every node in this process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use derecho_fabric::conformance::Harness;
use derecho_fabric::shm::{ShmConfig, ShmFabric};
use derecho_fabric::Fabric;

struct Shm {
    // Keeps the concrete fabrics so `crash` can abort one without a goodbye.
    made: std::sync::Mutex<Vec<ShmFabric>>,
}

fn shm() -> Shm {
    Shm {
        made: std::sync::Mutex::new(Vec::new()),
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        for f in self.made.lock().unwrap().iter() {
            f.shutdown();
        }
    }
}

impl Harness for Shm {
    fn cluster(&self, n: usize) -> Vec<Arc<dyn Fabric>> {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let fabrics: Vec<ShmFabric> = (0..n)
            .map(|i| ShmFabric::start(ShmConfig::new(i as u32, any)).unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = fabrics.iter().map(|f| f.local_addr().unwrap()).collect();
        // Every node connects to every other at once; the higher id dials.
        std::thread::scope(|s| {
            for (i, f) in fabrics.iter().enumerate() {
                let addrs = &addrs;
                s.spawn(move || {
                    for (j, addr) in addrs.iter().enumerate() {
                        if i != j {
                            f.connect(j as u32, *addr, Duration::from_secs(10)).unwrap();
                        }
                    }
                });
            }
        });
        self.made.lock().unwrap().extend(fabrics.iter().cloned());
        fabrics
            .into_iter()
            .map(|f| Arc::new(f) as Arc<dyn Fabric>)
            .collect()
    }

    fn drive(
        &self,
        _f: &[Arc<dyn Fabric>],
        timeout: Duration,
        cond: &mut dyn FnMut() -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return cond();
            }
            std::thread::yield_now();
        }
    }

    fn spawn(&self, job: Box<dyn FnOnce() + Send>) -> Box<dyn FnOnce()> {
        let t = std::thread::spawn(job);
        Box::new(move || t.join().expect("writer thread panicked"))
    }

    fn crash(&self, fabrics: &[Arc<dyn Fabric>], i: usize) {
        let id = fabrics[i].local_id();
        let made = self.made.lock().unwrap();
        let f = made
            .iter()
            .find(|f| f.local_id() == id && f.local_addr() == fabrics[i].local_addr());
        f.expect("fabric made by this harness").abort();
    }

    fn concurrent(&self) -> bool {
        true
    }
}

derecho_fabric::conformance_suite!(shm());
