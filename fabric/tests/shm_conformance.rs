//! The shared conformance suite on the shm backend, with every node in this process.

derecho_fabric::conformance_suite!(derecho_fabric::conformance::Local::<
    derecho_fabric::shm::ShmFabric,
>::new());
