//! The host side of the device: the hybrid Unix socket listener, the CONNECT handshake of host
//! clients, and the table of live connections, all driven by the worker's epoll set. Packets
//! for the guest are queued here until the driver gives RX buffers: control resets first, then
//! connections in turn.
//!
//! Only host processes of root or of the VMM's own user are served (SO_PEERCRED); others are
//! dropped when accepted. The host side never listens for the guest: a guest-initiated
//! connection is refused with a reset, without any socket call (the VMM makes no socket and
//! connects nowhere once the guest runs; its seccomp filter forbids both).

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtio_queue::Writer;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{Close, ConnKey, Connection};
use super::hybrid::ConnectLine;
use super::packet::{op, Header, HEADER_LEN, HOST_CID, TYPE_STREAM};
use super::payload::Payload;
use crate::devices::virtio::worker::{Poller, FIRST_BACKEND_TOKEN};
use crate::uds::AllowedPeers;

/// Most connections (and host clients still in their handshake) at once; more are refused.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a host client may take to send its CONNECT line, the guest to answer a REQUEST,
/// and a closing connection to flush.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Host-side ports of host-initiated connections are allocated from here up.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Most resets waiting for RX buffers; beyond it a reset is dropped (the guest times out).
const MAX_QUEUED_RSTS: usize = 1024;

const LISTENER_TOKEN: u64 = FIRST_BACKEND_TOKEN;
const TIMER_TOKEN: u64 = FIRST_BACKEND_TOKEN + 1;
const FIRST_STREAM_TOKEN: u64 = FIRST_BACKEND_TOKEN + 2;
const TICK: Duration = Duration::from_secs(1);

/// A host client that has not finished its CONNECT line.
#[derive(Debug)]
struct Pending {
    stream: UnixStream,
    line: ConnectLine,
    deadline: Instant,
}

/// A connection with its epoll registration.
#[derive(Debug)]
struct Entry {
    conn: Connection,
    token: u64,
    /// Events the stream is registered for; empty when not registered.
    registered: EventSet,
    /// In `rx_ready`.
    queued: bool,
}

/// All connections of one active device.
#[derive(Debug)]
pub struct Muxer {
    guest_cid: u64,
    uds: PathBuf,
    listener: UnixListener,
    peers: AllowedPeers,
    timer: TimerFd,
    timer_armed: bool,
    pending: HashMap<u64, Pending>,
    conns: HashMap<ConnKey, Entry>,
    tokens: HashMap<u64, ConnKey>,
    rx_ready: VecDeque<ConnKey>,
    rsts: VecDeque<Header>,
    next_token: u64,
    next_port: u32,
}

impl Muxer {
    /// A muxer for the guest `guest_cid`, accepting host clients of `peers` on `listener`
    /// (non-blocking, bound at `uds`).
    pub fn new(
        guest_cid: u64,
        uds: &Path,
        listener: UnixListener,
        peers: AllowedPeers,
    ) -> std::io::Result<Muxer> {
        Ok(Muxer {
            guest_cid,
            uds: uds.to_path_buf(),
            listener,
            peers,
            timer: TimerFd::new()?,
            timer_armed: false,
            pending: HashMap::new(),
            conns: HashMap::new(),
            tokens: HashMap::new(),
            rx_ready: VecDeque::new(),
            rsts: VecDeque::new(),
            next_token: FIRST_STREAM_TOKEN,
            next_port: FIRST_LOCAL_PORT,
        })
    }

    /// Registers the listener and the timer.
    pub fn start(&mut self, poller: &Poller) {
        if let Err(e) = poller.add(self.listener.as_raw_fd(), EventSet::IN, LISTENER_TOKEN) {
            crate::error_limited!("vsock: cannot watch {}: {e}", self.uds.display());
        }
        if let Err(e) = poller.add(self.timer.as_raw_fd(), EventSet::IN, TIMER_TOKEN) {
            crate::error_limited!("vsock: cannot watch its timer: {e}");
        }
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether a packet waits for an RX buffer.
    pub fn has_rx_work(&self) -> bool {
        !self.rsts.is_empty() || !self.rx_ready.is_empty()
    }

    /// Handles one well-formed packet from the guest.
    pub fn handle_tx(&mut self, poller: &Poller, header: &Header, payload: &mut Payload<'_>) {
        if let Err(e) = header.check_from_guest(self.guest_cid) {
            tracing::debug!("{e}");
            if header.op != op::RST {
                self.push_rst(header.rst_reply(self.guest_cid));
            }
            return;
        }
        let key = ConnKey {
            local_port: header.dst_port,
            peer_port: header.src_port,
        };
        let Some(entry) = self.conns.get_mut(&key) else {
            match header.op {
                op::REQUEST => self.refuse_guest_connect(header),
                op::RST => {}
                _ => self.push_rst(header.rst_reply(self.guest_cid)),
            }
            return;
        };
        match entry.conn.handle_packet(header, payload) {
            Ok(()) => {
                entry
                    .conn
                    .closing_deadline(Instant::now() + HANDSHAKE_TIMEOUT);
                if entry.conn.deadline().is_some() {
                    self.arm_timer();
                }
                self.sync(poller, key);
            }
            Err(close) => self.close(poller, key, close),
        }
    }

    /// A backend descriptor registered with `token` is ready.
    pub fn backend_event(&mut self, poller: &Poller, token: u64, events: EventSet) {
        match token {
            LISTENER_TOKEN => self.accept(poller),
            TIMER_TOKEN => self.tick(poller),
            token if self.pending.contains_key(&token) => self.read_handshake(poller, token),
            token => {
                if let Some(&key) = self.tokens.get(&token) {
                    self.stream_event(poller, key, events);
                }
            }
        }
    }

    /// Writes the next packet for the guest into `writer`; its length, or `None` if nothing can
    /// be sent now (the buffer is then left for later).
    pub fn next_rx(&mut self, poller: &Poller, writer: &mut Writer<'_>) -> Option<u32> {
        loop {
            if let Some(header) = self.rsts.pop_front() {
                return Some(match writer.write_all(&header.to_bytes()) {
                    Ok(()) => HEADER_LEN as u32,
                    Err(e) => {
                        crate::warn_limited!("vsock: cannot write a reset into guest memory: {e}");
                        0
                    }
                });
            }
            let key = self.rx_ready.pop_front()?;
            let Some(entry) = self.conns.get_mut(&key) else {
                continue;
            };
            entry.queued = false;
            match entry.conn.next_rx(self.guest_cid, writer) {
                Ok(Some(len)) => {
                    self.sync(poller, key);
                    return Some(len);
                }
                Ok(None) => self.sync_interest(poller, key),
                Err(close) => self.close(poller, key, close),
            }
        }
    }

    fn push_rst(&mut self, header: Header) {
        if self.rsts.len() >= MAX_QUEUED_RSTS {
            tracing::debug!("vsock: too many queued resets, dropping one for {header:?}");
            return;
        }
        self.rsts.push_back(header);
    }

    fn arm_timer(&mut self) {
        if self.timer_armed {
            return;
        }
        match self.timer.reset(TICK, Some(TICK)) {
            Ok(()) => self.timer_armed = true,
            Err(e) => crate::error_limited!("vsock: cannot arm its timer: {e}"),
        }
    }

    fn next_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    fn at_limit(&self) -> bool {
        self.conns.len() + self.pending.len() >= MAX_CONNECTIONS
    }

    fn accept(&mut self, poller: &Poller) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::warn_limited!("vsock: accept on {} failed: {e}", self.uds.display());
                    return;
                }
            };
            if !self.peers.allows(&stream, "vsock") {
                continue;
            }
            if self.at_limit() {
                crate::warn_limited!(
                    "vsock: {MAX_CONNECTIONS} connections already, refusing a host client"
                );
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                crate::warn_limited!("vsock: cannot make a host client non-blocking: {e}");
                continue;
            }
            let token = self.next_token();
            if let Err(e) = poller.add(stream.as_raw_fd(), EventSet::IN, token) {
                crate::warn_limited!("vsock: cannot watch a host client: {e}");
                continue;
            }
            let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
            self.pending.insert(
                token,
                Pending {
                    stream,
                    line: ConnectLine::default(),
                    deadline,
                },
            );
            self.arm_timer();
        }
    }

    /// Reads a host client's CONNECT line a byte at a time, so no byte meant for the guest is
    /// consumed with it.
    fn read_handshake(&mut self, poller: &Poller, token: u64) {
        let Some(pending) = self.pending.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match (&pending.stream).read(&mut byte) {
                Ok(0) => break None,
                Ok(_) => match pending.line.push(byte[0]) {
                    Ok(None) => continue,
                    Ok(Some(port)) => break Some(port),
                    Err(e) => {
                        tracing::debug!("{e}");
                        break None;
                    }
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("vsock: host client failed during its handshake: {e}");
                    break None;
                }
            }
        };
        let Some(pending) = self.pending.remove(&token) else {
            return;
        };
        let _ = poller.remove(pending.stream.as_raw_fd());
        if let Some(port) = port {
            self.host_connect(poller, token, pending.stream, port);
        }
    }

    fn free_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let port = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            let key = ConnKey {
                local_port: port,
                peer_port,
            };
            if !self.conns.contains_key(&key) {
                return port;
            }
        }
    }

    fn host_connect(&mut self, poller: &Poller, token: u64, stream: UnixStream, port: u32) {
        let key = ConnKey {
            local_port: self.free_local_port(port),
            peer_port: port,
        };
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        self.insert(
            poller,
            token,
            Connection::host_initiated(stream, key, deadline),
        );
        self.arm_timer();
    }

    /// The guest asked to connect to a host port: nothing on the host listens for the guest,
    /// so the answer is a reset.
    fn refuse_guest_connect(&mut self, header: &Header) {
        tracing::debug!(
            "vsock: refusing the guest's connection from port {} to host port {}",
            header.src_port,
            header.dst_port
        );
        self.push_rst(header.rst_reply(self.guest_cid));
    }

    fn insert(&mut self, poller: &Poller, token: u64, conn: Connection) {
        let key = conn.key();
        self.tokens.insert(token, key);
        let entry = Entry {
            conn,
            token,
            registered: EventSet::empty(),
            queued: false,
        };
        if let Some(old) = self.conns.insert(key, entry) {
            // Host ports are allocated free; keep the table consistent anyway.
            self.tokens.remove(&old.token);
            if !old.registered.is_empty() {
                let _ = poller.remove(old.conn.stream().as_raw_fd());
            }
        }
        self.sync(poller, key);
    }

    fn stream_event(&mut self, poller: &Poller, key: ConnKey, events: EventSet) {
        let Some(entry) = self.conns.get_mut(&key) else {
            return;
        };
        let trouble = events.intersects(EventSet::HANG_UP | EventSet::ERROR);
        if entry.registered.contains(EventSet::IN) && (events.contains(EventSet::IN) || trouble) {
            entry.conn.set_readable();
        }
        if entry.registered.contains(EventSet::OUT) && (events.contains(EventSet::OUT) || trouble) {
            if let Err(close) = entry.conn.flush() {
                self.close(poller, key, close);
                return;
            }
        }
        self.sync(poller, key);
    }

    /// Drops host clients and connections past their deadline.
    fn tick(&mut self, poller: &Poller) {
        let _ = self.timer.wait();
        let now = Instant::now();
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&token, _)| token)
            .collect();
        for token in late {
            if let Some(p) = self.pending.remove(&token) {
                tracing::debug!("vsock: host client sent no CONNECT line in time");
                let _ = poller.remove(p.stream.as_raw_fd());
            }
        }
        let late: Vec<ConnKey> = self
            .conns
            .values()
            .filter(|e| e.conn.deadline().is_some_and(|d| d <= now))
            .map(|e| e.conn.key())
            .collect();
        for key in late {
            tracing::debug!("vsock: connection {key:?} timed out");
            self.close(poller, key, Close { rst: true });
        }
        let waiting =
            !self.pending.is_empty() || self.conns.values().any(|e| e.conn.deadline().is_some());
        if !waiting {
            match self.timer.clear() {
                Ok(()) => self.timer_armed = false,
                Err(e) => crate::error_limited!("vsock: cannot stop its timer: {e}"),
            }
        }
    }

    /// Makes the epoll registration of `key` match what it waits for, and queues it for RX if
    /// it has a packet for the guest.
    fn sync(&mut self, poller: &Poller, key: ConnKey) {
        self.sync_interest(poller, key);
        if let Some(entry) = self.conns.get_mut(&key) {
            if !entry.queued && entry.conn.has_rx_work() {
                entry.queued = true;
                self.rx_ready.push_back(key);
            }
        }
    }

    fn sync_interest(&mut self, poller: &Poller, key: ConnKey) {
        let Some(entry) = self.conns.get_mut(&key) else {
            return;
        };
        let wanted = entry.conn.interest();
        if wanted == entry.registered {
            return;
        }
        let fd = entry.conn.stream().as_raw_fd();
        let result = if entry.registered.is_empty() {
            poller.add(fd, wanted, entry.token)
        } else if wanted.is_empty() {
            poller.remove(fd)
        } else {
            poller.modify(fd, wanted, entry.token)
        };
        match result {
            Ok(()) => entry.registered = wanted,
            Err(e) => {
                crate::warn_limited!("vsock: cannot watch the stream of {key:?}: {e}");
                self.close(poller, key, Close { rst: true });
            }
        }
    }

    fn close(&mut self, poller: &Poller, key: ConnKey, close: Close) {
        let Some(entry) = self.conns.remove(&key) else {
            return;
        };
        self.tokens.remove(&entry.token);
        if !entry.registered.is_empty() {
            let _ = poller.remove(entry.conn.stream().as_raw_fd());
        }
        if close.rst {
            self.push_rst(Header {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: key.local_port,
                dst_port: key.peer_port,
                kind: TYPE_STREAM,
                op: op::RST,
                ..Header::default()
            });
        }
    }
}
