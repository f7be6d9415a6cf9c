//! Shared helpers of the benchmark programs: timing, statistics and result lines.
#![forbid(unsafe_code)]
