//! Forming a group of processes: rank 0 listens on the master's port, every other rank
//! connects to it (retrying until the deadline, since the processes start in any
//! order) and says who it is; when all have arrived, rank 0 welcomes them and the
//! connections become the group's ([`TcpGroup`]). This is the convention of PyTorch's
//! launchers (`MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`), so `torchrun` or any
//! scheduler that sets them can start calib.
//!
//! A group that cannot form fails on every rank with a message saying why: rank 0
//! names the ranks that never arrived (and tells the ones that did), a rank that cannot
//! reach rank 0 names the address it tried. A connection that does not speak the
//! protocol (a port scanner, a stale client) is ignored with a warning.

use super::frame::{read_frame, split_u64s, write_frame, FrameError, Kind};
use super::TcpGroup;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Where and as whom a process joins its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous {
    pub rank: usize,
    pub world: usize,
    /// The master's host name or address (rank 0's machine), as the other ranks reach it.
    pub master_addr: String,
    pub port: u16,
    /// How long the group may take to form, from this process's start of [`Rendezvous::join`].
    pub timeout: Duration,
}

/// Why a group did not form.
#[derive(Debug, Error)]
pub enum RendezvousError {
    #[error(
        "rank 0 cannot listen on port {port} (MASTER_PORT, or CALIB_RENDEZVOUS_PORT if \
         set): {source}; if another program holds it, set CALIB_RENDEZVOUS_PORT to a free port"
    )]
    Listen { port: u16, source: io::Error },
    #[error(
        "rank(s) {} of {world} did not join the group at {addr} within {seconds} s \
         (--rendezvous-timeout); check that every process was started with the same \
         MASTER_ADDR, MASTER_PORT and WORLD_SIZE",
        list(missing)
    )]
    Missing {
        missing: Vec<usize>,
        world: usize,
        addr: String,
        seconds: u64,
    },
    #[error("rank {rank} could not reach rank 0 at {addr} within {seconds} s: {last}")]
    Unreachable {
        rank: usize,
        addr: String,
        seconds: u64,
        last: String,
    },
    #[error("rank 0 at {addr} refused rank {rank}: {message}")]
    Refused {
        rank: usize,
        addr: String,
        message: String,
    },
    #[error("the group at {addr} cannot form: {message}")]
    Invalid { addr: String, message: String },
    #[error("rank {rank}: the rendezvous with rank 0 at {addr} failed: {source}")]
    Protocol {
        rank: usize,
        addr: String,
        source: FrameError,
    },
}

fn list(ranks: &[usize]) -> String {
    ranks
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long rank 0 waits for a new connection to say who it is: a calib process does
/// at once, so a silent one is not one of the group.
const HELLO_WAIT: Duration = Duration::from_secs(5);

/// Between attempts to reach rank 0 or to accept.
const RETRY: Duration = Duration::from_millis(50);

impl Rendezvous {
    /// `MASTER_ADDR:MASTER_PORT`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.master_addr, self.port)
    }

    /// Forms the group; `collective_timeout` then bounds every wait for a peer in it.
    pub fn join(&self, collective_timeout: Duration) -> Result<TcpGroup, RendezvousError> {
        if self.world == 0 || self.rank >= self.world {
            return Err(RendezvousError::Invalid {
                addr: self.address(),
                message: format!("rank {} of a group of {}", self.rank, self.world),
            });
        }
        let links = if self.rank == 0 {
            self.gather()?
        } else {
            self.reach_master()?
        };
        let addr = self.address();
        TcpGroup::new(self.rank, links, collective_timeout).map_err(|e| RendezvousError::Protocol {
            rank: self.rank,
            addr,
            source: FrameError::Io(e),
        })
    }

    /// Rank 0: accepts every other rank (or gives up at the deadline, telling those
    /// that came why), then welcomes them.
    fn gather(&self) -> Result<Vec<Option<TcpStream>>, RendezvousError> {
        let deadline = Instant::now() + self.timeout;
        // All interfaces, as PyTorch's store does: MASTER_ADDR is how the others reach
        // this machine, which may not be a name it can bind locally.
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, self.port))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| RendezvousError::Listen {
                port: self.port,
                source,
            })?;
        let mut arrived: Vec<Option<TcpStream>> = (0..self.world).map(|_| None).collect();
        let fail = |arrived: &[Option<TcpStream>], e: RendezvousError| {
            for link in arrived.iter().flatten() {
                let _ = write_frame(link, Kind::Refuse, e.to_string().as_bytes());
            }
            Err(e)
        };
        while arrived[1..].iter().any(Option::is_none) {
            let (stream, from) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing = (1..self.world).filter(|&r| arrived[r].is_none()).collect();
                        let e = RendezvousError::Missing {
                            missing,
                            world: self.world,
                            addr: self.address(),
                            seconds: self.timeout.as_secs(),
                        };
                        return fail(&arrived, e);
                    }
                    std::thread::sleep(RETRY);
                    continue;
                }
                Err(source) => {
                    let e = RendezvousError::Listen {
                        port: self.port,
                        source,
                    };
                    return fail(&arrived, e);
                }
            };
            match self.hello_of(&stream) {
                Ok((rank, world)) => {
                    let problem = if world != self.world {
                        Some(format!(
                            "rank {rank} was started with WORLD_SIZE={world}, rank 0 with {}",
                            self.world
                        ))
                    } else if rank == 0 || rank >= self.world {
                        Some(format!("RANK={rank} is not a rank of a group of {world}"))
                    } else if arrived[rank].is_some() {
                        Some(format!("two processes were started with RANK={rank}"))
                    } else {
                        None
                    };
                    if let Some(message) = problem {
                        let _ = write_frame(&stream, Kind::Refuse, message.as_bytes());
                        let e = RendezvousError::Invalid {
                            addr: self.address(),
                            message,
                        };
                        return fail(&arrived, e);
                    }
                    arrived[rank] = Some(stream);
                }
                Err(e) => eprintln!(
                    "calib rendezvous: ignoring a connection from {from} on port {} that is \
                     not a calib rank: {e}",
                    self.port
                ),
            }
        }
        for link in arrived.iter().flatten() {
            if let Err(source) = write_frame(link, Kind::Welcome, &[]) {
                let e = RendezvousError::Protocol {
                    rank: 0,
                    addr: self.address(),
                    source,
                };
                return fail(&arrived, e);
            }
        }
        Ok(arrived)
    }

    /// The rank and world size a new connection announces.
    fn hello_of(&self, stream: &TcpStream) -> Result<(usize, usize), FrameError> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(HELLO_WAIT))?;
        match read_frame(stream)? {
            (Kind::Hello, payload) => {
                let ([rank, world], _) = split_u64s::<2>(Kind::Hello, &payload)?;
                Ok((rank as usize, world as usize))
            }
            (kind, _) => Err(FrameError::Malformed {
                kind,
                why: "a new connection must start with a hello".into(),
            }),
        }
    }

    /// A rank other than 0: connects to rank 0 (retrying until the deadline), says who
    /// it is, and waits to be welcomed.
    fn reach_master(&self) -> Result<Vec<Option<TcpStream>>, RendezvousError> {
        let deadline = Instant::now() + self.timeout;
        let addr = self.address();
        let stream = loop {
            let last = match self.try_connect(deadline) {
                Ok(stream) => break stream,
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(RendezvousError::Unreachable {
                    rank: self.rank,
                    addr,
                    seconds: self.timeout.as_secs(),
                    last: last.to_string(),
                });
            }
            std::thread::sleep(RETRY);
        };
        let protocol = |source| RendezvousError::Protocol {
            rank: self.rank,
            addr: addr.clone(),
            source,
        };
        let mut hello = Vec::with_capacity(16);
        hello.extend_from_slice(&(self.rank as u64).to_le_bytes());
        hello.extend_from_slice(&(self.world as u64).to_le_bytes());
        write_frame(&stream, Kind::Hello, &hello).map_err(protocol)?;
        // Rank 0 keeps its own deadline and says which ranks are missing when it
        // passes; this wait only guards against a rank 0 that stopped answering.
        stream
            .set_read_timeout(Some(self.timeout + HELLO_WAIT))
            .map_err(|e| protocol(FrameError::Io(e)))?;
        match read_frame(&stream).map_err(protocol)? {
            (Kind::Welcome, _) => {}
            (Kind::Refuse, message) => {
                return Err(RendezvousError::Refused {
                    rank: self.rank,
                    addr,
                    message: String::from_utf8_lossy(&message).into_owned(),
                })
            }
            (kind, _) => {
                return Err(protocol(FrameError::Malformed {
                    kind,
                    why: "rank 0 answered a hello with something else".into(),
                }))
            }
        }
        let mut links: Vec<Option<TcpStream>> = (0..self.world).map(|_| None).collect();
        links[0] = Some(stream);
        Ok(links)
    }

    /// One attempt at every address the master's name resolves to.
    fn try_connect(&self, deadline: Instant) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = (self.master_addr.as_str(), self.port)
            .to_socket_addrs()?
            .collect();
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("MASTER_ADDR {} resolves to no address", self.master_addr),
        );
        for addr in addrs {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(10), Duration::from_secs(1));
            match TcpStream::connect_timeout(&addr, wait) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}
