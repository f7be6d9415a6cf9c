//! Conversions from the config file's strings to typed values, and the small enums the config
//! uses. Each parser reports what it expected, never where: the caller adds the origin and key.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Why a string was rejected; turned into a [`ConfigError`](super::ConfigError) by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// Not of the expected shape; carries what was expected.
    Invalid(String),
    /// Of the right shape but outside the allowed range; carries the rule.
    OutOfRange(String),
}

/// Parses `true|yes|1` / `false|no|0`, ignoring case. Anything else is rejected (the original
/// read any other string as false; we refuse to guess).
pub(crate) fn parse_bool(s: &str) -> Result<bool, Problem> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(Problem::Invalid(
            "a boolean (true|yes|1 or false|no|0)".to_string(),
        )),
    }
}

/// Parses a decimal unsigned 32-bit integer.
pub(crate) fn parse_u32(s: &str) -> Result<u32, Problem> {
    s.parse()
        .map_err(|_| Problem::Invalid("an unsigned 32-bit integer".to_string()))
}

/// Parses a decimal unsigned 64-bit integer.
pub(crate) fn parse_u64(s: &str) -> Result<u64, Problem> {
    s.parse()
        .map_err(|_| Problem::Invalid("an unsigned 64-bit integer".to_string()))
}

/// Parses a TCP port: a number in `1..=65535`.
pub(crate) fn parse_port(s: &str) -> Result<u16, Problem> {
    let n: u64 = s
        .parse()
        .map_err(|_| Problem::Invalid("a port number (1-65535)".to_string()))?;
    match u16::try_from(n) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(Problem::OutOfRange(
            "a port must be between 1 and 65535".to_string(),
        )),
    }
}

/// Parses an IPv4 or IPv6 address (no host names).
pub(crate) fn parse_ip(s: &str) -> Result<IpAddr, Problem> {
    s.parse()
        .map_err(|_| Problem::Invalid("an IPv4 or IPv6 address".to_string()))
}

/// Parses a comma-separated list; an empty string is an empty list, an empty element is an error.
pub(crate) fn parse_list<T>(
    s: &str,
    item: impl Fn(&str) -> Result<T, Problem>,
) -> Result<Vec<T>, Problem> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|part| {
            let part = part.trim();
            if part.is_empty() {
                Err(Problem::Invalid(
                    "a comma-separated list without empty elements".to_string(),
                ))
            } else {
                item(part)
            }
        })
        .collect()
}

/// Parses one of the enums below.
pub(crate) fn parse_enum<T: FromStr<Err = ParseEnumError>>(s: &str) -> Result<T, Problem> {
    s.parse()
        .map_err(|e: ParseEnumError| Problem::Invalid(format!("one of {}", e.expected)))
}

/// Formats a list for writing back.
pub(crate) fn join_list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A string that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not one of {expected}")]
pub struct ParseEnumError {
    /// The rejected string.
    pub value: String,
    /// The accepted spellings, `|`-separated.
    pub expected: &'static str,
}

/// Declares a config enum with its spellings (matched case-insensitively, written in the
/// canonical form given here).
macro_rules! config_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// The accepted spellings, `|`-separated.
            pub const EXPECTED: &'static str = concat!($( $text, "|" ),+);

            /// The canonical spelling, as written by `Config::to_ini_string`.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text ),+ }
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $( if s.eq_ignore_ascii_case($text) { return Ok($name::$variant); } )+
                Err(ParseEnumError {
                    value: s.to_string(),
                    expected: Self::EXPECTED.trim_end_matches('|'),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum! {
    /// A log level of the `[LOGGER]` section, from most to least verbose.
    pub enum LogLevel {
        /// Everything.
        Trace => "trace",
        /// Debugging detail.
        Debug => "debug",
        /// Normal operation milestones.
        Info => "info",
        /// Unexpected but handled.
        Warn => "warn",
        /// Failures.
        Error => "error",
        /// Failures that stop the process (maps to `tracing`'s ERROR).
        Critical => "critical",
        /// Nothing.
        Off => "off",
    }
}

config_enum! {
    /// When a persistent subgroup's update reaches the disk, relative to its delivery
    /// (`[PERS] durability`, ours).
    pub enum Durability {
        /// Deliver, then persist in the background (the original's behaviour): after a total
        /// crash, only versions at or below the global persistence frontier are sure to survive.
        WriteBehind => "write_behind",
        /// Persist, then deliver: nothing a member delivered is lost in a total crash, at the
        /// cost of a sync before each delivery batch.
        WriteAhead => "write_ahead",
    }
}

config_enum! {
    /// Whether members authenticate each other (`[SECURITY] mode`).
    pub enum SecurityMode {
        /// No authentication: anyone who reaches a member's ports can take part. For a
        /// trusted network (the default).
        Open => "open",
        /// Every connection proves possession of the group secret (external clients: of the
        /// client secret) and carries authenticated, encrypted frames.
        Secret => "secret",
        /// Every connection runs mutual TLS 1.3 with certificates issued by the group's CA,
        /// each naming one member (or one external client), then carries authenticated,
        /// encrypted frames.
        Certificate => "certificate",
    }
}

impl LogLevel {
    /// The matching `tracing` filter (`critical` has no own level in `tracing` and maps to ERROR).
    pub fn to_level_filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            LogLevel::Trace => LevelFilter::TRACE,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Error | LogLevel::Critical => LevelFilter::ERROR,
            LogLevel::Off => LevelFilter::OFF,
        }
    }
}

config_enum! {
    /// How RDMC spreads the blocks of a large message (`SUBGROUP/<P>/rdmc_send_algorithm`).
    pub enum RdmcSendAlgorithm {
        /// Binomial pipeline: every node receives each block once and forwards it (the default).
        Binomial => "binomial_send",
        /// Each node forwards to the next one in a chain.
        Chain => "chain_send",
        /// The sender sends the whole message to each receiver in turn.
        Sequential => "sequential_send",
        /// A binary tree rooted at the sender.
        Tree => "tree_send",
    }
}

config_enum! {
    /// Which fabric implementation carries one-sided writes (`RDMA/backend`, our key).
    pub enum FabricBackend {
        /// One TCP stream per peer pair, no system libraries (the default).
        Tcp => "tcp",
        /// Shared memory between processes on one host.
        Shm => "shm",
        /// libfabric, with the provider named by `RDMA/provider`.
        Libfabric => "libfabric",
        /// Raw ibverbs.
        Verbs => "verbs",
    }
}

config_enum! {
    /// Who started this process (`DERECHO/launcher`, our key): with a cluster launcher the
    /// node id is the process's rank and ports are offset by its rank on the host.
    pub enum Launcher {
        /// Started by hand or by our `launch`: every setting as configured (the default).
        None => "none",
        /// Open MPI's `mpirun`: `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_LOCAL_RANK`,
        /// `OMPI_COMM_WORLD_SIZE`.
        Mpi => "mpi",
        /// Slurm's `srun`: `SLURM_PROCID`, `SLURM_LOCALID`, `SLURM_NTASKS`, and the contact is
        /// the first host of `SLURM_JOB_NODELIST`.
        Slurm => "slurm",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn booleans() {
        for t in ["true", "YES", "1", "True"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["false", "No", "0"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        assert!(parse_bool("on").is_err());
        assert!(parse_bool("").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("23580"), Ok(23580));
        assert_eq!(parse_port("65535"), Ok(65535));
        assert!(matches!(parse_port("0"), Err(Problem::OutOfRange(_))));
        assert!(matches!(parse_port("65536"), Err(Problem::OutOfRange(_))));
        assert!(matches!(parse_port("http"), Err(Problem::Invalid(_))));
        assert!(matches!(parse_port("-1"), Err(Problem::Invalid(_))));
    }

    #[test]
    fn lists() {
        assert_eq!(parse_list("", parse_u32), Ok(vec![]));
        assert_eq!(parse_list("1, 2,3", parse_u32), Ok(vec![1, 2, 3]));
        assert!(parse_list("1,,3", parse_u32).is_err());
        assert_eq!(join_list(&[1, 2]), "1,2");
    }

    #[test]
    fn enums() {
        assert_eq!("Chain_Send".parse(), Ok(RdmcSendAlgorithm::Chain));
        assert_eq!("off".parse(), Ok(LogLevel::Off));
        assert_eq!("LIBFABRIC".parse(), Ok(FabricBackend::Libfabric));
        let err = "fast".parse::<FabricBackend>().unwrap_err();
        assert_eq!(err.expected, "tcp|shm|libfabric|verbs");
        assert_eq!(RdmcSendAlgorithm::Tree.to_string(), "tree_send");
    }
}
