//! The shared conformance suite on the libfabric backend (`tcp` provider on `lo`, 127.0.0.1),
//! with every node in this process.
#![cfg(feature = "libfabric")]

derecho_fabric::conformance_suite!(derecho_fabric::conformance::Local::<
    derecho_fabric::libfabric::LibfabricFabric,
>::new());

/// The same with `[SECURITY] mode = secret`: side channels authenticated and sealed (the
/// one-sided writes themselves go through libfabric, which cannot wrap them).
mod secure {
    derecho_fabric::conformance_suite!(derecho_fabric::conformance::Local::<
        derecho_fabric::libfabric::LibfabricFabric,
    >::secure());
}
