//! The shared conformance suite (open, and with every link authenticated by a group secret) on the tcp backend, with every node in this process.

derecho_fabric::conformance_suite!(derecho_fabric::conformance::Local::<
    derecho_fabric::tcp::TcpFabric,
>::new());

/// The same with `[SECURITY] mode = secret`: links authenticated, side-channel frames sealed.
mod secure {
    derecho_fabric::conformance_suite!(derecho_fabric::conformance::Local::<
        derecho_fabric::tcp::TcpFabric,
    >::secure());
}
