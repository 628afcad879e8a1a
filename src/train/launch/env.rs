//! The environment a launcher gives each process of a group: PyTorch's convention
//! (`torchrun`, and schedulers that imitate it). Read and checked before anything else
//! happens, so a mistyped variable is an error naming it, not a group that never forms.

use anyhow::{bail, Result};

/// What a launcher told this process about its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// This process's rank, `0..world` (`RANK`); rank 0 writes the run directory.
    pub rank: usize,
    /// Processes in the group (`WORLD_SIZE`), one data-parallel replica each.
    pub world: usize,
    /// This process's index on its machine (`LOCAL_RANK`, default 0): its GPU on `cuda`.
    pub local_rank: usize,
    /// Rank 0's host (`MASTER_ADDR`).
    pub master_addr: String,
    /// The port rank 0 listens on: `CALIB_RENDEZVOUS_PORT` if set; else `MASTER_PORT`,
    /// or the port after it under torchrun's agent store, which holds `MASTER_PORT`
    /// itself (`TORCHELASTIC_USE_AGENT_STORE=True`).
    pub port: u16,
}

impl Launch {
    /// The launch described by this process's environment; `None` when neither `RANK`
    /// nor `WORLD_SIZE` is set (a plain run).
    pub fn from_env() -> Result<Option<Launch>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Launch::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let (rank, world) = match (var("RANK"), var("WORLD_SIZE")) {
            (None, None) => return Ok(None),
            (Some(_), None) => bail!(
                "RANK is set but WORLD_SIZE is not: a launcher sets both (with MASTER_ADDR \
                 and MASTER_PORT); unset RANK for a run of one process"
            ),
            (None, Some(_)) => {
                bail!("WORLD_SIZE is set but RANK is not (this process's rank, from 0)")
            }
            (Some(rank), Some(world)) => (rank, world),
        };
        let world = count("WORLD_SIZE", &world)?;
        if world == 0 {
            bail!("WORLD_SIZE=0: a group has at least one process");
        }
        let rank = count("RANK", &rank)?;
        if rank >= world {
            bail!("RANK={rank} is not below WORLD_SIZE={world} (ranks count from 0)");
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => count("LOCAL_RANK", &v)?,
            None => 0,
        };
        let master_addr = match var("MASTER_ADDR") {
            Some(a) if !a.trim().is_empty() => a.trim().to_string(),
            _ => bail!(
                "WORLD_SIZE is set but MASTER_ADDR is not: the host name or address of rank \
                 0's machine, where the group meets"
            ),
        };
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True");
        let port = match (var("CALIB_RENDEZVOUS_PORT"), var("MASTER_PORT")) {
            (Some(p), _) => port("CALIB_RENDEZVOUS_PORT", &p)?,
            (None, Some(p)) if agent_store => match port("MASTER_PORT", &p)?.checked_add(1) {
                Some(next) => next,
                None => bail!(
                    "MASTER_PORT=65535 is torchrun's store, and calib meets on the port after \
                     it: set CALIB_RENDEZVOUS_PORT to a free port"
                ),
            },
            (None, Some(p)) => port("MASTER_PORT", &p)?,
            (None, None) => {
                bail!("WORLD_SIZE is set but MASTER_PORT is not: the port rank 0 listens on")
            }
        };
        Ok(Some(Launch {
            rank,
            world,
            local_rank,
            master_addr,
            port,
        }))
    }
}

fn count(name: &str, value: &str) -> Result<usize> {
    match value.trim().parse() {
        Ok(n) => Ok(n),
        Err(_) => bail!("{name}=`{value}` is not a whole number"),
    }
}

fn port(name: &str, value: &str) -> Result<u16> {
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => bail!("{name}=`{value}` is not a TCP port (1-65535)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        Launch::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    const GOOD: [(&str, &str); 5] = [
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "node0"),
        ("MASTER_PORT", "29500"),
    ];

    fn with(change: (&'static str, &'static str)) -> Vec<(&'static str, &'static str)> {
        let mut vars: Vec<_> = GOOD
            .iter()
            .copied()
            .filter(|(n, _)| *n != change.0)
            .collect();
        vars.push(change);
        vars
    }

    fn error(vars: &[(&str, &str)]) -> String {
        launch(vars).unwrap_err().to_string()
    }

    #[test]
    fn a_launchers_environment_is_read() {
        assert_eq!(
            launch(&GOOD).unwrap(),
            Some(Launch {
                rank: 1,
                world: 2,
                local_rank: 1,
                master_addr: "node0".into(),
                port: 29500
            })
        );
        assert_eq!(launch(&[]).unwrap(), None);
        let moved = launch(&with(("CALIB_RENDEZVOUS_PORT", "29601"))).unwrap();
        assert_eq!(moved.unwrap().port, 29601);
        // torchrun's agent store holds MASTER_PORT: calib meets on the next port.
        let beside = launch(&with(("TORCHELASTIC_USE_AGENT_STORE", "True"))).unwrap();
        assert_eq!(beside.unwrap().port, 29501);
    }

    #[test]
    fn bad_variables_are_named() {
        let cases: [(Vec<(&str, &str)>, &str); 7] = [
            (with(("RANK", "2")), "RANK=2 is not below WORLD_SIZE=2"),
            (with(("RANK", "one")), "RANK=`one` is not a whole number"),
            (with(("WORLD_SIZE", "0")), "WORLD_SIZE=0"),
            (
                with(("MASTER_PORT", "http")),
                "MASTER_PORT=`http` is not a TCP port",
            ),
            (
                with(("MASTER_PORT", "70000")),
                "MASTER_PORT=`70000` is not a TCP port",
            ),
            (with(("MASTER_ADDR", " ")), "MASTER_ADDR is not"),
            (vec![("RANK", "0")], "WORLD_SIZE is not"),
        ];
        for (vars, expected) in cases {
            let err = error(&vars);
            assert!(err.contains(expected), "{vars:?}: {err}");
        }
        let without_addr: Vec<_> = GOOD
            .iter()
            .copied()
            .filter(|(n, _)| *n != "MASTER_ADDR")
            .collect();
        assert!(error(&without_addr).contains("MASTER_ADDR is not"));
    }
}
