//! Typed, validated `derecho.cfg` configuration (being written).
