//! Process groups over TCP, here as threads on loopback: the rendezvous, its failures,
//! and all-reduces that must equal the in-process group's to the bit.

use calib_ir::ReduceOp;
use calib_runtime::{
    Collective, CollectiveError, InProcess, Rendezvous, RendezvousError, Storage, TcpGroup,
};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rendezvous(rank: usize, world: usize, port: u16, seconds: u64) -> Rendezvous {
    Rendezvous {
        rank,
        world,
        master_addr: "127.0.0.1".into(),
        port,
        timeout: Duration::from_secs(seconds),
    }
}

/// Runs `body` on every rank of a new group of `world`, each in a thread.
fn with_group<T: Send>(world: usize, body: impl Fn(TcpGroup) -> T + Sync) -> Vec<T> {
    let port = free_port();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let body = &body;
                s.spawn(move || {
                    let group = rendezvous(rank, world, port, 20)
                        .join(Duration::from_secs(20))
                        .unwrap();
                    body(group)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Values whose sum depends on the order of addition.
fn tensor(rank: usize) -> Storage {
    Storage::F32(
        (0..257)
            .map(|i| ((i * 7919 + rank * 104729) % 1000) as f32 * 1.1e-3 - 0.37 + rank as f32 * 1e7)
            .collect(),
    )
}

fn bits(s: &Storage) -> Vec<u64> {
    match s {
        Storage::F32(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
        Storage::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
        Storage::I64(v) => v.iter().map(|&x| x as u64).collect(),
    }
}

#[test]
fn an_all_reduce_over_tcp_gives_the_in_process_groups_bits_on_every_rank() {
    let world = 3;
    let expected: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = InProcess::group(world)
            .into_iter()
            .map(|g| {
                s.spawn(move || {
                    let mean = g.all_reduce(&tensor(g.rank()), ReduceOp::Mean).unwrap();
                    bits(&mean)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let got = with_group(world, |g| {
        let mean = g.all_reduce(&tensor(g.rank()), ReduceOp::Mean).unwrap();
        let sum = g
            .all_reduce(&Storage::F64(vec![g.rank() as f64 + 0.5]), ReduceOp::Sum)
            .unwrap();
        (bits(&mean), sum)
    });
    for (rank, (mean, sum)) in got.iter().enumerate() {
        assert_eq!(mean, &expected[rank], "rank {rank}");
        assert_eq!(bits(sum), bits(&Storage::F64(vec![4.5])));
    }
}

#[test]
fn a_broadcast_delivers_rank_0s_bytes() {
    let got = with_group(3, |g| {
        let mine = format!("from {}", g.rank());
        let data = (g.rank() == 0).then_some(mine.as_bytes());
        g.broadcast(data).unwrap()
    });
    assert!(got.iter().all(|b| b == b"from 0"), "{got:?}");
}

#[test]
fn a_rank_that_never_arrives_is_named_by_rank_0() {
    let port = free_port();
    let err = rendezvous(0, 3, port, 1)
        .join(Duration::from_secs(1))
        .unwrap_err();
    assert!(matches!(&err, RendezvousError::Missing { missing, .. } if missing == &[1, 2]));
    let text = err.to_string();
    assert!(
        text.contains("rank(s) 1, 2 of 3") && text.contains(&format!(":{port}")),
        "{text}"
    );
}

#[test]
fn the_ranks_that_came_hear_which_one_did_not() {
    let port = free_port();
    let (zero, one) = std::thread::scope(|s| {
        let zero = s.spawn(|| rendezvous(0, 3, port, 2).join(Duration::from_secs(1)));
        let one = s.spawn(|| rendezvous(1, 3, port, 2).join(Duration::from_secs(1)));
        (zero.join().unwrap(), one.join().unwrap())
    });
    assert!(matches!(zero, Err(RendezvousError::Missing { .. })));
    let text = one.unwrap_err().to_string();
    assert!(
        text.contains("refused rank 1") && text.contains("rank(s) 2 of 3"),
        "{text}"
    );
}

#[test]
fn a_rank_without_a_master_names_the_address_it_tried() {
    let port = free_port();
    let text = rendezvous(1, 2, port, 1)
        .join(Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("rank 1 could not reach rank 0")
            && text.contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );
}

#[test]
fn two_processes_with_one_rank_are_refused() {
    let port = free_port();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = [0, 1, 1]
            .into_iter()
            .map(|rank| s.spawn(move || rendezvous(rank, 3, port, 5).join(Duration::from_secs(5))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let text = results[0].as_ref().unwrap_err().to_string();
    assert!(
        text.contains("two processes were started with RANK=1"),
        "{text}"
    );
    assert!(results[1].is_err() && results[2].is_err());
}

#[test]
fn a_stray_connection_is_ignored_and_the_group_still_forms() {
    let port = free_port();
    let groups = std::thread::scope(|s| {
        let zero = s.spawn(|| rendezvous(0, 2, port, 20).join(Duration::from_secs(5)));
        // Not a calib rank: speaks another protocol, then a real rank arrives.
        let stray = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        (&stray).write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let one = s.spawn(|| rendezvous(1, 2, port, 20).join(Duration::from_secs(5)));
        (zero.join().unwrap(), one.join().unwrap())
    });
    let (zero, one) = (groups.0.unwrap(), groups.1.unwrap());
    std::thread::scope(|s| {
        let a = s.spawn(move || zero.all_reduce(&Storage::F32(vec![1.0]), ReduceOp::Sum));
        let b = one
            .all_reduce(&Storage::F32(vec![2.0]), ReduceOp::Sum)
            .unwrap();
        assert_eq!(bits(&a.join().unwrap().unwrap()), bits(&b));
    });
}

#[test]
fn a_peer_that_leaves_is_named_by_every_rank_that_stays() {
    let results = with_group(3, |g| {
        g.all_reduce(&Storage::F32(vec![1.0]), ReduceOp::Sum)
            .unwrap();
        if g.rank() == 2 {
            drop(g);
            return None;
        }
        g.all_reduce(&Storage::F32(vec![1.0]), ReduceOp::Sum).err()
    });
    for (rank, err) in results.iter().take(2).enumerate() {
        assert_eq!(
            err.as_ref().unwrap(),
            &CollectiveError::PeerLeft { peer: 2, round: 1 },
            "rank {rank}"
        );
    }
}

#[test]
fn tensors_of_different_lengths_are_a_mismatch_not_a_hang() {
    let results = with_group(2, |g| {
        let data = Storage::F32(vec![0.0; 2 + g.rank()]);
        g.all_reduce(&data, ReduceOp::Sum)
    });
    assert!(
        matches!(&results[0], Err(CollectiveError::Mismatch { peer: 1, .. })),
        "{:?}",
        results[0].as_ref().err()
    );
    assert!(results[1].is_err());
}
