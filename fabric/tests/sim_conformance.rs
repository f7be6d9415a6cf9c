//! The shared conformance suite on the deterministic sim backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use derecho_fabric::conformance::Harness;
use derecho_fabric::sim::{SimConfig, SimNet};
use derecho_fabric::Fabric;

struct Sim {
    net: Arc<SimNet>,
}

fn sim() -> Sim {
    Sim {
        net: SimNet::new(SimConfig::new(0x5eed)),
    }
}

impl Harness for Sim {
    fn cluster(&self, n: usize) -> Vec<Arc<dyn Fabric>> {
        let fabrics: Vec<Arc<dyn Fabric>> = (0..n)
            .map(|i| self.net.add_node(i as u32) as Arc<dyn Fabric>)
            .collect();
        let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for f in &fabrics {
            for j in 0..n as u32 {
                if j != f.local_id() {
                    f.connect(j, nowhere, Duration::ZERO).unwrap();
                }
            }
        }
        fabrics
    }

    fn drive(
        &self,
        _f: &[Arc<dyn Fabric>],
        timeout: Duration,
        cond: &mut dyn FnMut() -> bool,
    ) -> bool {
        self.net.run_until(timeout, cond)
    }

    fn spawn(&self, job: Box<dyn FnOnce() + Send>) -> Box<dyn FnOnce()> {
        job();
        Box::new(|| {})
    }

    fn crash(&self, fabrics: &[Arc<dyn Fabric>], i: usize) {
        self.net.crash(fabrics[i].local_id());
    }

    fn concurrent(&self) -> bool {
        false
    }
}

derecho_fabric::conformance_suite!(sim());
