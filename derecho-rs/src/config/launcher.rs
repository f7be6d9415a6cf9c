//! Taking a member's place from a cluster launcher (`DERECHO/launcher`): Open MPI's `mpirun`
//! or Slurm's `srun` start every member with the same configuration, and each process learns
//! its rank from the environment.

use std::net::{IpAddr, ToSocketAddrs};

use super::error::ConfigError;
use super::value::Launcher;
use super::Config;

/// A process's place among those a cluster launcher started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launched {
    /// Its rank, which is its node id.
    pub rank: u32,
    /// How many processes the launcher started.
    pub size: u32,
    /// Its rank among the processes on its host (its ports are offset by this).
    pub local_rank: u16,
}

/// The launcher's variables: rank, size, rank on the host.
fn variables(launcher: Launcher) -> Option<[&'static str; 3]> {
    match launcher {
        Launcher::None => None,
        Launcher::Mpi => Some([
            "OMPI_COMM_WORLD_RANK",
            "OMPI_COMM_WORLD_SIZE",
            "OMPI_COMM_WORLD_LOCAL_RANK",
        ]),
        Launcher::Slurm => Some(["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"]),
    }
}

/// Applies `config.derecho.launcher` with the environment `env`: the node id becomes the
/// rank, this node's ports move up by its rank on the host, and under Slurm the contact is
/// the job's first host. Does nothing for `none`.
pub(crate) fn apply(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let launcher = config.derecho.launcher;
    let Some([rank_var, size_var, local_var]) = variables(launcher) else {
        return Ok(());
    };
    let fail = |variable: &'static str, reason: String| ConfigError::Launcher {
        launcher: launcher.as_str(),
        variable,
        reason,
    };
    let number = |variable: &'static str| -> Result<u32, ConfigError> {
        let text = env(variable).ok_or_else(|| {
            fail(
                variable,
                "not set (was this process started by the launcher?)".into(),
            )
        })?;
        text.trim()
            .parse::<u32>()
            .map_err(|e| fail(variable, format!("{text:?} is not a number: {e}")))
    };
    let rank = number(rank_var)?;
    let size = number(size_var)?;
    let local = number(local_var)?;
    if rank >= size {
        return Err(fail(rank_var, format!("rank {rank} of {size} processes")));
    }
    let d = &mut config.derecho;
    if rank >= d.max_node_id {
        return Err(fail(
            rank_var,
            format!("rank {rank} is not below max_node_id = {}", d.max_node_id),
        ));
    }
    let local_rank =
        u16::try_from(local).map_err(|_| fail(local_var, format!("{local} ranks on one host")))?;
    let shift = |port: u16, key: &str| -> Result<u16, ConfigError> {
        port.checked_add(local_rank).ok_or_else(|| {
            fail(
                local_var,
                format!("{key} {port} + local rank {local_rank} is not a port"),
            )
        })
    };
    d.local_id = rank;
    d.gms_port = shift(d.gms_port, "gms_port")?;
    d.sst_port = shift(d.sst_port, "sst_port")?;
    d.rdmc_port = shift(d.rdmc_port, "rdmc_port")?;
    d.state_transfer_port = shift(d.state_transfer_port, "state_transfer_port")?;
    d.external_port = shift(d.external_port, "external_port")?;
    if launcher == Launcher::Slurm {
        let list = env("SLURM_JOB_NODELIST")
            .or_else(|| env("SLURM_NODELIST"))
            .ok_or_else(|| fail("SLURM_JOB_NODELIST", "not set".into()))?;
        let first = first_host(&list)
            .ok_or_else(|| fail("SLURM_JOB_NODELIST", format!("cannot read {list:?}")))?;
        d.contact_ip = resolve(&first)
            .ok_or_else(|| fail("SLURM_JOB_NODELIST", format!("cannot resolve {first}")))?;
        if let Some(me) = env("SLURMD_NODENAME") {
            d.local_ip = resolve(&me)
                .ok_or_else(|| fail("SLURMD_NODENAME", format!("cannot resolve {me}")))?;
        }
    }
    config.launched = Some(Launched {
        rank,
        size,
        local_rank,
    });
    Ok(())
}

/// The first host of a Slurm node list: `node[07-09,12],gpu1` gives `node07`.
pub(crate) fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    let end = list.find([',', '[']).unwrap_or(list.len());
    let prefix = &list[..end];
    if list[end..].starts_with('[') {
        let inner = &list[end + 1..list[end..].find(']').map(|i| end + i)?];
        let first = inner.split([',', '-']).next()?.trim();
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(format!("{prefix}{first}"))
    } else {
        (!prefix.is_empty()).then(|| prefix.to_string())
    }
}

fn resolve(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .ok()?
        .find(|a| a.is_ipv4())
        .map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn slurm_node_lists_name_their_first_host() {
        assert_eq!(first_host("node[07-09,12],gpu1").as_deref(), Some("node07"));
        assert_eq!(first_host("c1,c2").as_deref(), Some("c1"));
        assert_eq!(first_host("solo").as_deref(), Some("solo"));
        assert_eq!(first_host("n[003]").as_deref(), Some("n003"));
        assert_eq!(first_host("n[x-y]"), None);
        assert_eq!(first_host(""), None);
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn an_mpi_rank_becomes_the_node_id_and_moves_the_ports() {
        let mut c = Config::default();
        c.derecho.launcher = Launcher::Mpi;
        let base = c.derecho.clone();
        let vars = [
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "3"),
        ];
        apply(&mut c, &env(&vars)).unwrap();
        assert_eq!(c.derecho.local_id, 3);
        assert_eq!(c.derecho.gms_port, base.gms_port + 3);
        assert_eq!(c.derecho.sst_port, base.sst_port + 3);
        assert_eq!(c.derecho.contact_port, base.contact_port);
        assert_eq!(
            c.launched,
            Some(Launched {
                rank: 3,
                size: 4,
                local_rank: 3
            })
        );
    }

    #[test]
    fn slurm_names_the_contact_host() {
        let mut c = Config::default();
        c.derecho.launcher = Launcher::Slurm;
        // An address as the host name resolves without DNS.
        let vars = [
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_JOB_NODELIST", "127.0.0.1"),
        ];
        apply(&mut c, &env(&vars)).unwrap();
        assert_eq!(c.derecho.local_id, 1);
        assert_eq!(c.derecho.contact_ip.to_string(), "127.0.0.1");
    }

    #[test]
    fn a_missing_or_bad_variable_is_named() {
        let mut c = Config::default();
        c.derecho.launcher = Launcher::Mpi;
        let e = apply(&mut c, &env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("OMPI_COMM_WORLD_RANK") && e.contains("not set"),
            "{e}"
        );
        let vars = [
            ("OMPI_COMM_WORLD_RANK", "4"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
        ];
        let e = apply(&mut c, &env(&vars)).unwrap_err().to_string();
        assert!(e.contains("rank 4 of 4"), "{e}");
    }
}
