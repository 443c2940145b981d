//! The inter-node step of a multi-node all-reduce: plain TCP (`std::net`) between the node leaders, in a
//! star around node 0.
//!
//! Each node first sums its own replicas (burn-collective's local level, in
//! [`super::distributed`]); its leader then sends that flat `f32` buffer to node 0, which adds the buffers in
//! rank order (`((node 0 + node 1) + node 2) + ...`, one fixed order) and sends the one result back to
//! every node. Every node therefore holds bit-identical sums.
//!
//! Every wait is bounded by the link's timeout (unless a call asks for none: waiting for node 0's
//! evaluation), and every failure is an error naming the node: a node that dies closes its socket (the
//! others see the end of the stream at once), one that hangs is caught by the timeout, and a node that
//! sends what the others do not expect (another buffer size or exchange number: a different config) makes
//! node 0 stop every node with a message saying so.
//!
//! Wire format (little endian): a joining node sends `HELLO rank nnodes local_replicas` and node 0 answers
//! `OK` or `FAIL text`; an exchange is `REDU seq n` followed by `n` f32 values to node 0, and `SUMS seq n`
//! with the sums (or `FAIL text`) back.
//!
//! Why not burn-collective's global level: in burn-collective 0.21 the barrier that ends each global
//! all-reduce (`global/node/sync.rs`) clears a copy of its list of synced nodes instead of the list itself,
//! so the list keeps growing and never equals the set of nodes again: the second global all-reduce of a
//! process waits forever. Its transfers also panic instead of failing when a peer goes away.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const HELLO: u32 = u32::from_le_bytes(*b"HELO");
const OK: u32 = u32::from_le_bytes(*b"OKAY");
const FAIL: u32 = u32::from_le_bytes(*b"FAIL");
const REDU: u32 = u32::from_le_bytes(*b"REDU");
const SUMS: u32 = u32::from_le_bytes(*b"SUMS");
/// Longest text of a `FAIL` frame (a longer one is not read: the peer is not speaking this protocol).
const MAX_TEXT: u32 = 64 * 1024;

/// A failed inter-node step, naming the node at fault where one is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkError(pub String);

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LinkError {}

/// What a joining node tells node 0 about itself: all nodes of a run must agree on the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The joining node's rank, 1..nnodes.
    pub rank: u32,
    /// Nodes of the run.
    pub nnodes: u32,
    /// Replicas (devices) per node.
    pub local_replicas: u32,
}

/// One node's end of the inter-node links: on node 0, a stream to every other node (by rank); elsewhere,
/// the stream to node 0.
#[derive(Debug)]
pub struct NodeLink {
    rank: u32,
    nnodes: u32,
    /// Node 0: `peers[k]` is node `k + 1`. Other nodes: `peers[0]` is node 0.
    peers: Vec<TcpStream>,
    timeout: Duration,
    seq: u64,
}

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> LinkError {
    use std::io::ErrorKind as K;
    let why = match e.kind() {
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            "closed the connection (it stopped or died)".to_string()
        }
        K::WouldBlock | K::TimedOut => "did not answer within the timeout (--timeout)".to_string(),
        _ => format!("could not be reached: {e}"),
    };
    LinkError(format!("{what} {why}"))
}

fn write_frame(s: &mut TcpStream, header: &[u32], seq: Option<u64>, payload: &[u8]) -> std::io::Result<()> {
    // one write per frame: with TCP_NODELAY a small status vector then costs one packet each way
    let mut buf = Vec::with_capacity(4 * header.len() + 16 + payload.len());
    for h in header {
        buf.extend_from_slice(&h.to_le_bytes());
    }
    if let Some(q) = seq {
        buf.extend_from_slice(&q.to_le_bytes());
    }
    buf.extend_from_slice(payload);
    s.write_all(&buf)?;
    s.flush()
}

fn read_u32(s: &mut TcpStream) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(s: &mut TcpStream) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    s.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// The text of a `FAIL` frame whose tag was read.
fn read_text(s: &mut TcpStream) -> std::io::Result<String> {
    let n = read_u32(s)?.min(MAX_TEXT);
    let mut b = vec![0u8; n as usize];
    s.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

fn fail_frame(s: &mut TcpStream, text: &str) {
    let t = &text.as_bytes()[..text.len().min(MAX_TEXT as usize)];
    // best effort: the node may already be gone
    let _ = write_frame(s, &[FAIL, t.len() as u32], None, t);
}

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn read_values(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<f32>> {
    let mut b = vec![0u8; n * 4];
    s.read_exact(&mut b)?;
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn configure(s: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))
}

impl NodeLink {
    /// Node 0: accept the other `nnodes - 1` nodes on `listener` (bound by the caller, so that a port in use
    /// is reported as bad input) within `timeout`. `local_replicas` must be the same on every node.
    pub fn accept(
        listener: TcpListener,
        nnodes: u32,
        local_replicas: u32,
        timeout: Duration,
    ) -> Result<Self, LinkError> {
        let mut slots: Vec<Option<TcpStream>> = (1..nnodes).map(|_| None).collect();
        let deadline = Instant::now() + timeout;
        listener
            .set_nonblocking(true)
            .map_err(|e| LinkError(format!("node 0: cannot listen: {e}")))?;
        while slots.iter().any(Option::is_none) {
            let (mut s, addr) = match listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<String> = slots
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| s.is_none())
                            .map(|(k, _)| (k + 1).to_string())
                            .collect();
                        return Err(LinkError(format!(
                            "node(s) {} did not join node 0 within {} s (--timeout)",
                            missing.join(", "),
                            timeout.as_secs()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => return Err(LinkError(format!("node 0: accepting a node failed: {e}"))),
            };
            let who = format!("the node at {addr}");
            configure(&s, timeout).map_err(|e| io_err(&who, e))?;
            let hello = (|| {
                let tag = read_u32(&mut s)?;
                Ok::<_, std::io::Error>((tag, read_u32(&mut s)?, read_u32(&mut s)?, read_u32(&mut s)?))
            })();
            let (tag, rank, their_nnodes, their_local) = match hello {
                Ok(h) => h,
                // not one of ours (a port scan, a stale client): keep waiting for the real nodes
                Err(_) => continue,
            };
            if tag != HELLO {
                continue;
            }
            let problem = if their_nnodes != nnodes {
                Some(format!(
                    "node {rank} was started with --nnodes {their_nnodes}, node 0 with --nnodes {nnodes}"
                ))
            } else if rank == 0 || rank >= nnodes {
                Some(format!(
                    "a node joined with --node-rank {rank}, outside 1..{}",
                    nnodes - 1
                ))
            } else if slots[rank as usize - 1].is_some() {
                Some(format!("two nodes joined with --node-rank {rank}"))
            } else if their_local != local_replicas {
                Some(format!(
                    "node {rank} has {their_local} devices, node 0 has {local_replicas}: every node lists as many"
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                fail_frame(&mut s, &p);
                for peer in slots.iter_mut().flatten() {
                    fail_frame(peer, &p);
                }
                return Err(LinkError(p));
            }
            write_frame(&mut s, &[OK], None, &[]).map_err(|e| io_err(format!("node {rank}"), e))?;
            slots[rank as usize - 1] = Some(s);
        }
        Ok(Self {
            rank: 0,
            nnodes,
            peers: slots.into_iter().flatten().collect(),
            timeout,
            seq: 0,
        })
    }

    /// A node other than 0: join node 0 at `master`, retrying until `timeout` (node 0 may start later).
    pub fn connect(master: SocketAddr, hello: Hello, timeout: Duration) -> Result<Self, LinkError> {
        let deadline = Instant::now() + timeout;
        let mut s = loop {
            match TcpStream::connect_timeout(&master, Duration::from_secs(1)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(LinkError(format!(
                        "node 0 did not answer at {master} within {} s (--timeout): {e}; is it running there?",
                        timeout.as_secs()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        configure(&s, timeout).map_err(|e| io_err("node 0", e))?;
        write_frame(
            &mut s,
            &[HELLO, hello.rank, hello.nnodes, hello.local_replicas],
            None,
            &[],
        )
        .map_err(|e| io_err("node 0", e))?;
        match read_u32(&mut s).map_err(|e| io_err("node 0", e))? {
            OK => {}
            FAIL => {
                let text = read_text(&mut s).map_err(|e| io_err("node 0", e))?;
                return Err(LinkError(format!("node 0 refused this node: {text}")));
            }
            _ => return Err(LinkError(format!("{master} is not node 0 of an attndet run"))),
        }
        Ok(Self {
            rank: hello.rank,
            nnodes: hello.nnodes,
            peers: vec![s],
            timeout,
            seq: 0,
        })
    }

    /// This node's rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Number of nodes.
    pub fn nnodes(&self) -> u32 {
        self.nnodes
    }

    /// Sum `values` (this node's local sums; every node must pass as many) over all nodes, in rank order.
    /// Waits at most the link's timeout for any node, or without bound when `unbounded` (a node waiting for
    /// node 0's evaluation). Any failure here is final: the run must stop.
    pub fn all_reduce_sum(&mut self, values: Vec<f32>, unbounded: bool) -> Result<Vec<f32>, LinkError> {
        let seq = self.seq;
        self.seq += 1;
        let wait = if unbounded { None } else { Some(self.timeout) };
        for s in &self.peers {
            s.set_read_timeout(wait)
                .map_err(|e| LinkError(format!("setting a timeout: {e}")))?;
        }
        if self.rank == 0 {
            self.gather_and_answer(seq, values)
        } else {
            self.send_and_wait(seq, values)
        }
    }

    fn gather_and_answer(&mut self, seq: u64, mut acc: Vec<f32>) -> Result<Vec<f32>, LinkError> {
        let n = acc.len();
        let mut failure = None;
        for (k, s) in self.peers.iter_mut().enumerate() {
            let who = format!("node {}", k + 1);
            let got = (|| {
                let tag = read_u32(s)?;
                if tag != REDU {
                    return Ok(Err(format!("{who} sent an unknown message ({tag:#x})")));
                }
                let (their_seq, their_n) = (read_u64(s)?, read_u64(s)?);
                if their_seq != seq || their_n != n as u64 {
                    return Ok(Err(format!(
                        "{who} sent {their_n} values for exchange {their_seq}, node 0 has {n} for exchange \
                         {seq}: the nodes do not run the same config"
                    )));
                }
                read_values(s, n).map(Ok)
            })();
            match got {
                Ok(Ok(v)) => {
                    for (a, b) in acc.iter_mut().zip(&v) {
                        *a += *b;
                    }
                }
                Ok(Err(text)) => {
                    failure = Some(LinkError(text));
                    break;
                }
                Err(e) => {
                    failure = Some(io_err(&who, e));
                    break;
                }
            }
        }
        if let Some(e) = failure {
            for s in &mut self.peers {
                fail_frame(s, &e.0);
            }
            return Err(e);
        }
        let payload = to_bytes(&acc);
        for (k, s) in self.peers.iter_mut().enumerate() {
            write_frame(
                s,
                &[SUMS],
                Some(seq),
                &[&(n as u64).to_le_bytes()[..], &payload].concat(),
            )
            .map_err(|e| io_err(format!("node {}", k + 1), e))?;
        }
        Ok(acc)
    }

    fn send_and_wait(&mut self, seq: u64, values: Vec<f32>) -> Result<Vec<f32>, LinkError> {
        let n = values.len();
        let s = &mut self.peers[0];
        let mut payload = (n as u64).to_le_bytes().to_vec();
        payload.extend(to_bytes(&values));
        write_frame(s, &[REDU], Some(seq), &payload).map_err(|e| io_err("node 0", e))?;
        let tag = read_u32(s).map_err(|e| io_err("node 0", e))?;
        match tag {
            SUMS => {}
            FAIL => {
                let text = read_text(s).map_err(|e| io_err("node 0", e))?;
                return Err(LinkError(format!("node 0 stopped the exchange: {text}")));
            }
            t => return Err(LinkError(format!("node 0 sent an unknown message ({t:#x})"))),
        }
        let (their_seq, their_n) = (
            read_u64(s).map_err(|e| io_err("node 0", e))?,
            read_u64(s).map_err(|e| io_err("node 0", e))?,
        );
        if their_seq != seq || their_n != n as u64 {
            return Err(LinkError(format!(
                "node 0 answered exchange {their_seq} with {their_n} values, this node expected exchange {seq} \
                 with {n}"
            )));
        }
        read_values(s, n).map_err(|e| io_err("node 0", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    /// Node 0 on a free port, and its address.
    fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    /// `nnodes` links on localhost (node 0 first), each from its own thread as on real nodes.
    fn links(nnodes: u32, timeout: Duration) -> Vec<NodeLink> {
        let (l, addr) = listener();
        let joins: Vec<_> = (1..nnodes)
            .map(|rank| {
                std::thread::spawn(move || {
                    NodeLink::connect(
                        addr,
                        Hello {
                            rank,
                            nnodes,
                            local_replicas: 2,
                        },
                        timeout,
                    )
                    .unwrap()
                })
            })
            .collect();
        let mut all = vec![NodeLink::accept(l, nnodes, 2, timeout).unwrap()];
        all.extend(joins.into_iter().map(|j| j.join().unwrap()));
        all
    }

    /// Run one exchange on every link at once: `inputs[r]` from node r.
    fn exchange(links: Vec<NodeLink>, inputs: Vec<Vec<f32>>) -> Vec<(NodeLink, Result<Vec<f32>, LinkError>)> {
        let hs: Vec<_> = links
            .into_iter()
            .zip(inputs)
            .map(|(mut l, v)| {
                std::thread::spawn(move || {
                    let r = l.all_reduce_sum(v, false);
                    (l, r)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn three_nodes_get_bit_identical_sums_in_rank_order() {
        let mut ls = links(3, T);
        // by hand: 1 + 2 + 4 = 7; 0.5 - 0.25 + 0 = 0.25; and 1e8 + 1 - 1e8 in f32 rank order:
        // (1e8 + 1) rounds to 1e8 (spacing 8), then - 1e8 = 0: the fixed order gives 0 on every node
        let inputs = vec![vec![1.0, 0.5, 1e8], vec![2.0, -0.25, 1.0], vec![4.0, 0.0, -1e8]];
        for round in 0..20 {
            let out = exchange(ls, inputs.clone());
            ls = Vec::new();
            for (l, r) in out {
                let r = r.unwrap();
                assert_eq!(r, vec![7.0, 0.25, 0.0], "round {round}, node {}", l.rank());
                ls.push(l);
            }
        }
    }

    #[test]
    fn an_empty_buffer_and_uneven_sizes_reduce() {
        let mut ls = links(2, T);
        for n in [0usize, 1, 7, 1_000_003] {
            // node r sends r + i / 2: sums 1 + i (exact: small integers and halves)
            let inputs = (0..2)
                .map(|r| (0..n).map(|i| r as f32 + i as f32 / 2.0).collect())
                .collect();
            let out = exchange(ls, inputs);
            ls = Vec::new();
            for (l, r) in out {
                let r = r.unwrap();
                assert_eq!(r.len(), n);
                assert!(r.iter().enumerate().all(|(i, &v)| v == 1.0 + i as f32), "n {n}");
                ls.push(l);
            }
        }
    }

    #[test]
    fn one_node_alone_is_the_identity() {
        let (l, _) = listener();
        let mut link = NodeLink::accept(l, 1, 1, T).unwrap();
        assert_eq!(
            link.all_reduce_sum(vec![3.0, -1.0], false).unwrap(),
            vec![3.0, -1.0]
        );
        assert_eq!(link.all_reduce_sum(Vec::new(), false).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn different_sizes_stop_every_node_with_a_message() {
        let ls = links(3, T);
        let out = exchange(ls, vec![vec![1.0; 4], vec![1.0; 4], vec![1.0; 5]]);
        for (l, r) in out {
            let e = r.unwrap_err().0;
            assert!(e.contains("node 2 sent 5 values"), "node {}: {e}", l.rank());
            assert!(e.contains("same config"), "{e}");
        }
    }

    #[test]
    fn a_node_that_disconnects_is_an_error_not_a_hang() {
        let mut ls = links(3, Duration::from_secs(30));
        drop(ls.pop()); // node 2 dies before the exchange
        let start = Instant::now();
        let out = exchange(ls, vec![vec![1.0], vec![2.0]]);
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        for (l, r) in out {
            let e = r.unwrap_err().0;
            assert!(
                e.contains("node 2 closed the connection"),
                "node {}: {e}",
                l.rank()
            );
        }
    }

    #[test]
    fn node_0_dying_ends_the_others() {
        let mut ls = links(2, Duration::from_secs(30));
        let mut one = ls.pop().unwrap();
        drop(ls);
        let start = Instant::now();
        let e = one.all_reduce_sum(vec![1.0], false).unwrap_err().0;
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(e.contains("node 0 closed the connection"), "{e}");
    }

    #[test]
    fn a_silent_node_is_caught_by_the_timeout() {
        let mut ls = links(2, Duration::from_secs(1));
        let _silent = ls.pop().unwrap(); // connected, never sends
        let start = Instant::now();
        let e = ls[0].all_reduce_sum(vec![1.0], false).unwrap_err().0;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{took:?}"
        );
        assert!(e.contains("node 1 did not answer within the timeout"), "{e}");
    }

    #[test]
    fn joining_checks_the_counts_and_the_master() {
        // node 0 expects 2 nodes of 2 devices; `hello` joins: both sides' errors
        let refused = |hello: Hello| {
            let (l, addr) = listener();
            let j = std::thread::spawn(move || NodeLink::connect(addr, hello, T));
            let e0 = NodeLink::accept(l, 2, 2, T).unwrap_err().0;
            (e0, j.join().unwrap().unwrap_err().0)
        };
        // another --nnodes: refused, both sides say why
        let (e0, e1) = refused(Hello {
            rank: 1,
            nnodes: 3,
            local_replicas: 2,
        });
        assert!(e0.contains("--nnodes 3") && e0.contains("--nnodes 2"), "{e0}");
        assert!(e1.contains("refused") && e1.contains("--nnodes 3"), "{e1}");
        // another device count
        let (e0, e1) = refused(Hello {
            rank: 1,
            nnodes: 2,
            local_replicas: 1,
        });
        assert!(e0.contains("node 1 has 1 devices, node 0 has 2"), "{e0}");
        assert!(e1.contains("every node lists as many"), "{e1}");
        // nobody listening: an error after the timeout
        let (l, addr) = listener();
        drop(l);
        let start = Instant::now();
        let hello = Hello {
            rank: 1,
            nnodes: 2,
            local_replicas: 1,
        };
        let e = NodeLink::connect(addr, hello, Duration::from_secs(1))
            .unwrap_err()
            .0;
        assert!(start.elapsed() < Duration::from_secs(4));
        assert!(e.contains("node 0 did not answer"), "{e}");
        // node 0 alone: the missing nodes are named
        let (l, _) = listener();
        let e = NodeLink::accept(l, 3, 1, Duration::from_millis(300))
            .unwrap_err()
            .0;
        assert!(e.contains("node(s) 1, 2 did not join"), "{e}");
    }
}
