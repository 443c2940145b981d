//! The inter-node step of a multi-node all-reduce: plain TCP (`std::net`) between the node leaders, a ring
//! all-reduce as NCCL and Gloo do it.
//!
//! Each node first sums its own replicas (burn-collective's local level, in [`super::distributed`]); its
//! leader then joins the ring: the buffer is cut into `nnodes` parts, `nnodes - 1` reduce-scatter steps
//! (each node sends one part to its successor and adds the part its predecessor sends) leave every part
//! complete on one node, and `nnodes - 1` all-gather steps pass the complete parts on. Each node sends and
//! receives `2 (nnodes - 1) / nnodes` buffers per sum, whatever the number of nodes (a star through node 0
//! would put `2 (nnodes - 1)` buffers on node 0's link). Every part is summed in one fixed order (starting
//! at the node after the one that completes it), and every node receives the completed parts as they are,
//! so every node holds bit-identical sums; with 2 nodes the sums equal the rank-order ones.
//!
//! Setting up: node 0 listens on the master port; every other node binds a ring port, joins node 0 with
//! `HELLO`, and learns its successor's ring address from node 0 (`NEXT`); then each node connects to its
//! successor and accepts its predecessor (`RING rank`).
//!
//! Every wait is bounded by the link's timeout (unless a call asks for none: waiting for node 0's
//! evaluation), and every failure is an error naming the node: a node that dies closes its sockets (its
//! neighbours see the end of the stream at once), one that hangs is caught by the timeout, and a node that
//! sends what the others do not expect (another buffer size or exchange number: a different config) is
//! named. A node that fails sends the reason to its successor, which passes it on, so that every node stops
//! with the first node's message.
//!
//! Wire format (little endian): `HELLO rank nnodes local_replicas ring_port` to node 0, answered by `OK` then
//! `NEXT len address` (or `FAIL len text`); `RING rank` on a ring connection; a step's part is
//! `DATA seq n part` and the part's `f32` values (`n` the whole buffer's length).
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
const NEXT: u32 = u32::from_le_bytes(*b"NEXT");
const RING: u32 = u32::from_le_bytes(*b"RING");
const DATA: u32 = u32::from_le_bytes(*b"DATA");
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

/// One node's end of the inter-node links: the set-up streams (on node 0, one to every other node; elsewhere,
/// the one to node 0) and the ring.
#[derive(Debug)]
pub struct NodeLink {
    rank: u32,
    nnodes: u32,
    /// Node 0: `peers[k]` is node `k + 1`. Other nodes: `peers[0]` is node 0. Kept open for the run.
    #[allow(dead_code)]
    peers: Vec<TcpStream>,
    /// `None` for a node alone.
    ring: Option<Ring>,
    timeout: Duration,
    seq: u64,
}

/// A node's two ring streams.
#[derive(Debug)]
struct Ring {
    /// To node `rank + 1` (mod nnodes).
    next: TcpStream,
    /// From node `rank - 1` (mod nnodes).
    prev: TcpStream,
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
        let mut ring_ports = vec![0u16; nnodes as usize];
        let deadline = Instant::now() + timeout;
        let ring_listener = bind_ring_port(listener.local_addr().map(|a| a.ip()))?;
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
                let counts = (read_u32(&mut s)?, read_u32(&mut s)?, read_u32(&mut s)?);
                Ok::<_, std::io::Error>((tag, counts, read_u32(&mut s)?))
            })();
            let (tag, (rank, their_nnodes, their_local), ring_port) = match hello {
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
            ring_ports[rank as usize] = ring_port as u16;
            slots[rank as usize - 1] = Some(s);
        }
        let mut peers: Vec<TcpStream> = slots.into_iter().flatten().collect();
        if nnodes == 1 {
            return Ok(Self {
                rank: 0,
                nnodes,
                peers,
                ring: None,
                timeout,
                seq: 0,
            });
        }
        ring_ports[0] = ring_listener
            .local_addr()
            .map_err(|e| LinkError(format!("node 0: its ring port: {e}")))?
            .port();
        // Each node's ring address as node 0 sees it: the address it joined from; node 0's own is the one
        // the last node reached it at.
        let address = |r: usize, peers: &[TcpStream]| -> Result<SocketAddr, LinkError> {
            let ip = if r == 0 {
                peers[peers.len() - 1].local_addr()
            } else {
                peers[r - 1].peer_addr()
            }
            .map_err(|e| io_err(format!("node {r}"), e))?
            .ip();
            Ok(SocketAddr::new(ip, ring_ports[r]))
        };
        let n = nnodes as usize;
        for r in 1..n {
            let next = address((r + 1) % n, &peers)?.to_string();
            write_frame(
                &mut peers[r - 1],
                &[NEXT, next.len() as u32],
                None,
                next.as_bytes(),
            )
            .map_err(|e| io_err(format!("node {r}"), e))?;
        }
        let next = address(1, &peers)?;
        let ring = join_ring(0, nnodes, ring_listener, next, timeout)?;
        Ok(Self {
            rank: 0,
            nnodes,
            peers,
            ring: Some(ring),
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
        // the ring port, on the interface that reaches node 0 (the others reach this node there too)
        let ring_listener = bind_ring_port(s.local_addr().map(|a| a.ip()))?;
        let ring_port = ring_listener
            .local_addr()
            .map_err(|e| LinkError(format!("node {}: its ring port: {e}", hello.rank)))?
            .port();
        write_frame(
            &mut s,
            &[
                HELLO,
                hello.rank,
                hello.nnodes,
                hello.local_replicas,
                ring_port as u32,
            ],
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
        let next = match read_u32(&mut s).map_err(|e| io_err("node 0", e))? {
            NEXT => read_text(&mut s).map_err(|e| io_err("node 0", e))?,
            FAIL => {
                let text = read_text(&mut s).map_err(|e| io_err("node 0", e))?;
                return Err(LinkError(format!("node 0 stopped the set-up: {text}")));
            }
            t => return Err(LinkError(format!("node 0 sent an unknown message ({t:#x})"))),
        };
        let next: SocketAddr = next.parse().map_err(|_| {
            LinkError(format!(
                "node 0 sent {next:?} as the ring address of the next node"
            ))
        })?;
        let ring = join_ring(hello.rank, hello.nnodes, ring_listener, next, timeout)?;
        Ok(Self {
            rank: hello.rank,
            nnodes: hello.nnodes,
            peers: vec![s],
            ring: Some(ring),
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

    /// Sum `values` (this node's local sums; every node must pass as many) over all nodes (the ring of the
    /// module's doc). Waits at most the link's timeout for any node, or without bound when `unbounded` (a
    /// node waiting for node 0's evaluation). Any failure here is final: the run must stop.
    pub fn all_reduce_sum(&mut self, mut values: Vec<f32>, unbounded: bool) -> Result<Vec<f32>, LinkError> {
        let seq = self.seq;
        self.seq += 1;
        let Some(ring) = self.ring.as_mut() else {
            return Ok(values);
        };
        let wait = if unbounded { None } else { Some(self.timeout) };
        for s in [&ring.next, &ring.prev] {
            s.set_read_timeout(wait)
                .and_then(|()| s.set_write_timeout(wait))
                .map_err(|e| LinkError(format!("setting a timeout: {e}")))?;
        }
        let result = ring.all_reduce(self.rank as usize, self.nnodes as usize, seq, &mut values);
        if let Err(e) = &result {
            // the successor may be waiting for this node: pass the reason on (it forwards it in turn)
            fail_frame(&mut ring.next, &e.0);
        }
        result.map(|()| values)
    }
}

/// A listener on a free port of `ip` (the interface the set-up stream uses) for the ring predecessor.
fn bind_ring_port(ip: std::io::Result<std::net::IpAddr>) -> Result<TcpListener, LinkError> {
    let ip = ip.map_err(|e| LinkError(format!("the local address of the node link: {e}")))?;
    TcpListener::bind((ip, 0)).map_err(|e| LinkError(format!("cannot open a ring port on {ip}: {e}")))
}

/// Connect node `rank` to its successor at `next` and accept its predecessor on `listener`, within `timeout`.
fn join_ring(
    rank: u32,
    nnodes: u32,
    listener: TcpListener,
    next: SocketAddr,
    timeout: Duration,
) -> Result<Ring, LinkError> {
    let deadline = Instant::now() + timeout;
    let (next_rank, prev_rank) = ((rank + 1) % nnodes, (rank + nnodes - 1) % nnodes);
    // Connect first: the successor's port is open since before its HELLO, and the kernel queues the
    // connection until it accepts, so no node waits for another to get here.
    let mut next_stream = loop {
        match TcpStream::connect_timeout(&next, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => {
                return Err(LinkError(format!(
                    "node {rank} cannot reach node {next_rank} at {next} within {} s (--timeout): {e}; the \
                     nodes must accept connections from each other on any port, not only on the master port",
                    timeout.as_secs()
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let who = format!("node {next_rank}");
    configure(&next_stream, timeout).map_err(|e| io_err(&who, e))?;
    write_frame(&mut next_stream, &[RING, rank], None, &[]).map_err(|e| io_err(&who, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| LinkError(format!("node {rank}: its ring port: {e}")))?;
    let prev = loop {
        match listener.accept() {
            Ok((mut s, _)) => {
                if configure(&s, timeout).is_err() {
                    continue;
                }
                let hello = read_u32(&mut s).and_then(|tag| Ok((tag, read_u32(&mut s)?)));
                // anything else is not the predecessor (a port scan, a stale client): keep waiting
                if matches!(hello, Ok((RING, r)) if r == prev_rank) {
                    break s;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(LinkError(format!(
                        "node {prev_rank} did not connect to node {rank} within {} s (--timeout)",
                        timeout.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(LinkError(format!(
                    "node {rank}: accepting node {prev_rank} failed: {e}"
                )));
            }
        }
    };
    Ok(Ring {
        next: next_stream,
        prev,
    })
}

impl Ring {
    /// Sum `v` over the ring in place: `2 (nnodes - 1)` steps, in each of which this node sends one part to
    /// its successor while it receives one from its predecessor (on two threads: both parts may exceed the
    /// socket buffers). Part `c` is `v[c n / nnodes .. (c + 1) n / nnodes]`.
    fn all_reduce(&mut self, rank: usize, nnodes: usize, seq: u64, v: &mut [f32]) -> Result<(), LinkError> {
        let n = v.len();
        let part = |c: usize| c * n / nnodes..(c + 1) * n / nnodes;
        let (next_rank, prev_rank) = ((rank + 1) % nnodes, (rank + nnodes - 1) % nnodes);
        for step in 0..2 * (nnodes - 1) {
            // reduce-scatter: send the part completed so far, add the predecessor's; after `nnodes - 1`
            // steps node `r` holds part `r + 1` complete; all-gather: pass the complete parts on
            let (reduce, s) = if step < nnodes - 1 {
                (true, step)
            } else {
                (false, step - (nnodes - 1))
            };
            let (send, recv) = if reduce {
                ((rank + nnodes - s) % nnodes, (rank + 2 * nnodes - s - 1) % nnodes)
            } else {
                ((rank + 1 + nnodes - s) % nnodes, (rank + nnodes - s) % nnodes)
            };
            let mut frame = Vec::with_capacity(32 + 4 * part(send).len());
            frame.extend_from_slice(&DATA.to_le_bytes());
            for x in [seq, n as u64, send as u64] {
                frame.extend_from_slice(&x.to_le_bytes());
            }
            frame.extend(to_bytes(&v[part(send)]));
            let Ring { next, prev } = self;
            let (sent, got) = std::thread::scope(|sc| {
                let sender = sc.spawn(move || next.write_all(&frame).and_then(|()| next.flush()));
                let got = read_part(prev, prev_rank, rank, seq, n, recv, part(recv).len());
                (sender.join(), got)
            });
            let got = got?;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(io_err(format!("node {next_rank}"), e)),
                Err(_) => {
                    return Err(LinkError(format!(
                        "node {rank}: sending to node {next_rank} failed"
                    )));
                }
            }
            let dst = &mut v[part(recv)];
            if reduce {
                for (a, b) in dst.iter_mut().zip(&got) {
                    *a += *b; // the partial sum so far + this node's value (f32 addition commutes)
                }
            } else {
                dst.copy_from_slice(&got);
            }
        }
        Ok(())
    }
}

/// Part `part` (of `len` values) of exchange `seq` of a buffer of `n` values, from node `from` on `s`.
fn read_part(
    s: &mut TcpStream,
    from: usize,
    me: usize,
    seq: u64,
    n: usize,
    part: usize,
    len: usize,
) -> Result<Vec<f32>, LinkError> {
    let who = format!("node {from}");
    match read_u32(s).map_err(|e| io_err(&who, e))? {
        DATA => {}
        // a node stopped: its reason, passed on around the ring
        FAIL => return Err(LinkError(read_text(s).map_err(|e| io_err(&who, e))?)),
        t => return Err(LinkError(format!("{who} sent an unknown message ({t:#x})"))),
    }
    let mut header = || read_u64(s).map_err(|e| io_err(&who, e));
    let (their_seq, their_n, their_part) = (header()?, header()?, header()?);
    if their_seq != seq || their_n != n as u64 {
        return Err(LinkError(format!(
            "{who} sent {their_n} values for exchange {their_seq}, node {me} has {n} for exchange {seq}: the \
             nodes do not run the same config"
        )));
    }
    if their_part != part as u64 {
        return Err(LinkError(format!(
            "{who} sent part {their_part} of exchange {seq}, node {me} expected part {part}"
        )));
    }
    read_values(s, len).map_err(|e| io_err(&who, e))
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
    fn three_nodes_get_bit_identical_sums_in_ring_order() {
        let mut ls = links(3, T);
        // three values, three parts: part c is summed starting at node c, `(x_c + x_c+1) + x_c+2`. By hand:
        // (1 + 2) + 4 = 7; (-0.25 + 0) + 0.5 = 0.25; and (-1e8 + 1e8) + 1 = 1 in f32 (rank order would
        // round 1e8 + 1 to 1e8 and give 0): one fixed order, the same on every node
        let inputs = vec![vec![1.0, 0.5, 1e8], vec![2.0, -0.25, 1.0], vec![4.0, 0.0, -1e8]];
        for round in 0..20 {
            let out = exchange(ls, inputs.clone());
            ls = Vec::new();
            for (l, r) in out {
                let r = r.unwrap();
                assert_eq!(r, vec![7.0, 0.25, 1.0], "round {round}, node {}", l.rank());
                ls.push(l);
            }
        }
    }

    #[test]
    fn rings_of_two_to_five_nodes_sum_any_length_identically_on_every_node() {
        for nnodes in 2..=5u32 {
            let mut ls = links(nnodes, T);
            for n in [0usize, 1, 3, 4, 7, 1000, 65_537] {
                let inputs: Vec<Vec<f32>> = (0..nnodes as u64).map(|r| values(n, r)).collect();
                let out = exchange(ls, inputs.clone());
                let first: Vec<u32> = out[0].1.as_ref().unwrap().iter().map(|x| x.to_bits()).collect();
                assert_eq!(first.len(), n);
                for (i, &bits) in first.iter().enumerate() {
                    // the f64 sum of nnodes values of [-1, 1): f32 rounding of each partial sum only
                    let exact: f64 = inputs.iter().map(|v| v[i] as f64).sum();
                    let got = f32::from_bits(bits) as f64;
                    assert!(
                        (got - exact).abs() <= 1e-6 * nnodes as f64,
                        "{nnodes} nodes, n {n}, [{i}]: {got} vs {exact}"
                    );
                }
                ls = Vec::new();
                for (l, r) in out {
                    let bits: Vec<u32> = r.unwrap().iter().map(|x| x.to_bits()).collect();
                    assert!(
                        bits == first,
                        "{nnodes} nodes, n {n}: node {} differs from node 0",
                        l.rank()
                    );
                    ls.push(l);
                }
            }
        }
    }

    /// `n` values in [-1, 1) from a seed (a 64-bit LCG).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
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
        // node 0 (node 2's successor) sees 5 values from node 2 and passes that on to node 1; node 2 sees 4
        // from node 1
        for (l, r) in out {
            let e = r.unwrap_err().0;
            let expected = if l.rank() == 2 {
                "node 1 sent 4 values for exchange 0, node 2 has 5"
            } else {
                "node 2 sent 5 values for exchange 0, node 0 has 4"
            };
            assert!(e.contains(expected), "node {}: {e}", l.rank());
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
