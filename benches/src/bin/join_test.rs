//! `join_test`: how long a node takes to join a running group, in one process on 127.0.0.1:
//! `join_test [--secret FILE | --certificates] ROUNDS`. Members 0 and 1 form a group with one replicated
//! subgroup over every member; then, ROUNDS times, a third member starts (timed from the call
//! to `GroupBuilder::start` until it returns with the view that holds it, state transfer
//! included) and leaves again. With `--secret` the group runs in `[SECURITY] mode = secret`, with
//! `--certificates` in `mode = certificate` under a CA made for the run.
//! Prints one result line with the median, mean and spread of the join times, and every sample.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use benches::rpc_bench::Bytes;
use derecho::config::{Config, SecurityMode};
use derecho::layout::{LayoutPolicy, SubgroupPolicy, TypePolicy};
use derecho::rpc::{Group, GroupBuilder};
use derecho_tests::ports::listen_port as free_port;

/// The group's security: open, a secret file, or a CA with the folder of its certificates.
enum Security {
    Open,
    Secret(PathBuf),
    Certificates(Box<derecho::secure::GroupCa>, PathBuf),
}

impl Security {
    fn name(&self) -> &'static str {
        match self {
            Security::Open => "open",
            Security::Secret(_) => "secret",
            Security::Certificates(..) => "certificate",
        }
    }
}

fn config(id: u32, contact: u16, security: &Security) -> Result<Config, String> {
    let mut c = Config::default();
    let d = &mut c.derecho;
    d.local_id = id;
    d.contact_port = contact;
    d.gms_port = if id == 0 { contact } else { free_port()? };
    d.sst_port = free_port()?;
    d.state_transfer_port = free_port()?;
    d.external_port = free_port()?;
    match security {
        Security::Open => {}
        Security::Secret(s) => {
            c.security.mode = SecurityMode::Secret;
            c.security.group_secret_file = s.clone();
        }
        Security::Certificates(ca, dir) => benches::use_certificate(&mut c, ca, dir)?,
    }
    Ok(c)
}

fn start(c: &Config) -> Result<Group, String> {
    let policy = LayoutPolicy {
        types: vec![TypePolicy::new(
            "Bytes",
            vec![SubgroupPolicy::flexible_even(1, 1, 3)],
        )],
    };
    GroupBuilder::new(c)
        .replicated::<Bytes>("Bytes", |_| Bytes::fresh())
        .layout(policy)
        .timeout(Duration::from_secs(30))
        .start()
        .map_err(|e| format!("node {}: {e}", c.derecho.local_id))
}

fn run() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (security, rest) = match args.as_slice() {
        [flag, file, rest @ ..] if flag == "--secret" => {
            (Security::Secret(PathBuf::from(file)), rest)
        }
        [flag, rest @ ..] if flag == "--certificates" => {
            let ca = derecho::secure::GroupCa::new("join_test", 1).map_err(|e| e.to_string())?;
            let dir = std::env::temp_dir().join(format!("join_test-{}", std::process::id()));
            (Security::Certificates(Box::new(ca), dir), rest)
        }
        rest => (Security::Open, rest),
    };
    let rounds: usize = rest
        .first()
        .ok_or("usage: join_test [--secret FILE | --certificates] ROUNDS")?
        .parse()
        .map_err(|e| format!("ROUNDS: {e}"))?;
    let contact = free_port()?;
    let c0 = config(0, contact, &security)?;
    let c1 = config(1, contact, &security)?;
    let (g0, g1) = std::thread::scope(|s| {
        let a = s.spawn(|| start(&c0));
        let b = s.spawn(|| start(&c1));
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<Group, String>>| {
            h.join().map_err(|_| "a member panicked".to_string())?
        };
        Ok::<_, String>((join(a)?, join(b)?))
    })?;
    let mut ms = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let c2 = config(2, contact, &security)?;
        let t = Instant::now();
        let g2 = start(&c2).map_err(|e| format!("round {round}: {e}"))?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let vid = g0.view().vid;
        g2.leave(Duration::from_secs(10))
            .map_err(|e| format!("round {round}: leave: {e}"))?;
        drop(g2);
        // The next round starts once the survivors are in the view without the joiner.
        let deadline = Instant::now() + Duration::from_secs(20);
        while g0.view().vid <= vid || g0.members().len() != 2 {
            if Instant::now() > deadline {
                return Err(format!(
                    "round {round}: the joiner's departure was not seen"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop((g0, g1));
    if let Security::Certificates(_, dir) = &security {
        let _ = std::fs::remove_dir_all(dir);
    }
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let (min, max) = (ms.first().copied(), ms.last().copied());
    let mean = ms.iter().sum::<f64>() / n.max(1) as f64;
    let all: Vec<String> = ms.iter().map(|m| format!("{m:.1}")).collect();
    Ok(format!(
        "join_test mode={} rounds={n} join_p50_ms={:.1} join_mean_ms={mean:.1} join_min_ms={:.1} \
         join_max_ms={:.1} samples_ms={}",
        security.name(),
        ms.get(n / 2).copied().unwrap_or(0.0),
        min.unwrap_or(0.0),
        max.unwrap_or(0.0),
        all.join(","),
    ))
}

fn main() -> ExitCode {
    benches::log_to_stderr();
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("join_test: {e}");
            ExitCode::FAILURE
        }
    }
}
