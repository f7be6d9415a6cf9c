//! The shared conformance suite on the libfabric backend (`tcp` provider on `lo`, 127.0.0.1),
//! with every node in this process.
#![cfg(feature = "libfabric")]

derecho_fabric::conformance_suite!(derecho_fabric::conformance::Local::<
    derecho_fabric::libfabric::LibfabricFabric,
>::new());
