//! One vsock stream connection between a guest port and a host Unix stream: its state machine
//! (connecting, established, closing), the bytes it relays both ways under credit-based flow
//! control, and the control packets it owes the guest. Every connection is host-initiated: the
//! host side never listens for the guest.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use virtio_queue::Writer;
use vmm_sys_util::epoll::EventSet;

use super::credit::Credit;
use super::hybrid::ok_reply;
use super::packet::{
    op, rx_payload_room, Header, HEADER_LEN, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::payload::Payload;

/// The connection must end; `rst` says whether the guest must be sent a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    /// Send the guest an OP_RST for this connection.
    pub rst: bool,
}

const RST: Close = Close { rst: true };

/// The most one read takes from a connection's Unix stream for the guest.
const STREAM_READ: usize = 64 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Host-initiated: the guest has been (or will be) sent a REQUEST and has not answered.
    Connecting,
    /// Data flows.
    Established,
    /// The guest shut down both directions; we flush what it sent, then reset.
    Closing,
}

/// The (host port, guest port) pair naming a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Port on the host side (CID 2).
    pub local_port: u32,
    /// Port on the guest side.
    pub peer_port: u32,
}

/// A connection and its Unix stream.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    key: ConnKey,
    state: State,
    /// When a connecting or closing connection gives up.
    deadline: Option<Instant>,
    credit: Credit,
    /// Bytes from the guest the Unix stream has not taken yet (at most the credit we gave).
    to_stream: VecDeque<u8>,
    /// Bytes read from the Unix stream and not yet sent to the guest are
    /// `from_stream[ahead.0..ahead.1]`: one read takes what the guest's credit allows, up to
    /// [`STREAM_READ`], and feeds the guest's 4 KiB receive buffers one after the other,
    /// instead of a system call per buffer. Allocated at the first read.
    from_stream: Vec<u8>,
    ahead: (usize, usize),
    /// What the guest announced it stops doing (SHUTDOWN_* flags).
    peer_shutdown: u32,
    /// SHUTDOWN flags we owe the guest.
    shutdown_to_send: u32,
    send_request: bool,
    send_credit_update: bool,
    /// We asked the guest for credit and it has not given any yet.
    credit_requested: bool,
    /// The Unix stream reported readable and we have not drained it since.
    readable: bool,
    /// The Unix stream's reading side ended.
    stream_eof: bool,
    /// Our writing side of the Unix stream is shut.
    write_shut: bool,
}

impl Connection {
    fn with(stream: UnixStream, key: ConnKey, state: State, credit: Credit) -> Connection {
        Connection {
            stream,
            key,
            state,
            deadline: None,
            credit,
            to_stream: VecDeque::new(),
            from_stream: Vec::new(),
            ahead: (0, 0),
            peer_shutdown: 0,
            shutdown_to_send: 0,
            send_request: false,
            send_credit_update: false,
            credit_requested: false,
            readable: false,
            stream_eof: false,
            write_shut: false,
        }
    }

    /// A host process asked (CONNECT) for guest port `key.peer_port`: we owe the guest a REQUEST,
    /// which it must answer before `deadline`.
    pub fn host_initiated(stream: UnixStream, key: ConnKey, deadline: Instant) -> Connection {
        let mut conn = Connection::with(stream, key, State::Connecting, Credit::new(0, 0));
        conn.send_request = true;
        conn.deadline = Some(deadline);
        conn
    }

    /// The connection's name.
    pub fn key(&self) -> ConnKey {
        self.key
    }

    /// The Unix stream.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// When a connecting or closing connection must be dropped.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The epoll events the Unix stream must be watched for (empty: not at all).
    pub fn interest(&self) -> EventSet {
        let mut events = EventSet::empty();
        if self.state == State::Established
            && !self.readable
            && !self.has_read_ahead()
            && !self.stream_eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && self.credit.peer_free() > 0
        {
            events |= EventSet::IN;
        }
        if !self.to_stream.is_empty() {
            events |= EventSet::OUT;
        }
        events
    }

    /// The Unix stream reported readable (or hung up): the next RX packets may carry its bytes.
    pub fn set_readable(&mut self) {
        self.readable = true;
    }

    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && (self.has_read_ahead() || (self.readable && !self.stream_eof))
            && self.peer_shutdown & SHUTDOWN_RCV == 0
    }

    /// Whether bytes read from the Unix stream wait for the guest.
    fn has_read_ahead(&self) -> bool {
        self.ahead.0 < self.ahead.1
    }

    /// Whether the connection has a packet for the guest.
    pub fn has_rx_work(&self) -> bool {
        self.send_request
            || self.shutdown_to_send != 0
            || self.send_credit_update
            || (self.can_send_data() && (self.credit.peer_free() > 0 || !self.credit_requested))
    }

    /// Handles a packet from the guest addressed to this connection. The caller then calls
    /// [`Connection::flush`] if the Unix stream became writable.
    pub fn handle_packet(
        &mut self,
        header: &Header,
        payload: &mut Payload<'_>,
    ) -> Result<(), Close> {
        self.credit
            .update_from_peer(header.buf_alloc, header.fwd_cnt);
        if self.credit.peer_free() > 0 {
            self.credit_requested = false;
        }
        match (self.state, header.op) {
            (_, op::RST) => Err(Close { rst: false }),
            (State::Connecting, op::RESPONSE) => self.established(),
            (State::Connecting, _) => Err(RST),
            (_, op::RW) => self.receive(payload),
            (_, op::CREDIT_UPDATE) => Ok(()),
            (_, op::CREDIT_REQUEST) => {
                self.send_credit_update = true;
                Ok(())
            }
            (_, op::SHUTDOWN) => {
                self.peer_shutdown |= header.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                if self.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
                    self.state = State::Closing;
                }
                self.flush()
            }
            // REQUEST or RESPONSE on a live connection, or an unknown operation.
            _ => Err(RST),
        }
    }

    /// Sets the deadline of a closing connection (the caller knows the clock).
    pub fn closing_deadline(&mut self, deadline: Instant) {
        if self.state == State::Closing && self.deadline.is_none() {
            self.deadline = Some(deadline);
        }
    }

    fn established(&mut self) -> Result<(), Close> {
        self.state = State::Established;
        self.deadline = None;
        let reply = ok_reply(self.key.local_port);
        // A fresh stream's buffer always takes these few bytes; failing means the client left.
        match (&self.stream).write(reply.as_bytes()) {
            Ok(n) if n == reply.len() => Ok(()),
            Ok(_) => Err(RST),
            Err(e) => {
                tracing::debug!(
                    "vsock: cannot answer CONNECT on port {}: {e}",
                    self.key.local_port
                );
                Err(RST)
            }
        }
    }

    /// Forwards a data packet: straight from guest memory to the Unix stream when nothing is
    /// queued before it, and whatever the stream does not take into the queue.
    fn receive(&mut self, payload: &mut Payload<'_>) -> Result<(), Close> {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 || self.write_shut {
            tracing::debug!("vsock: data after the guest's shutdown on {:?}", self.key);
            return Err(RST);
        }
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        if let Err(e) = self.credit.received(len) {
            crate::warn_limited!("{e} (connection {:?})", self.key);
            return Err(RST);
        }
        if self.to_stream.is_empty() {
            let written = payload.write_to(&self.stream).map_err(|e| {
                tracing::debug!("vsock: Unix stream of {:?} failed: {e}", self.key);
                RST
            })?;
            self.credit
                .forwarded(u32::try_from(written).unwrap_or(u32::MAX));
        }
        payload.copy_rest(&mut self.to_stream);
        if self.credit.update_due() {
            self.send_credit_update = true;
        }
        Ok(())
    }

    /// Writes buffered guest bytes to the Unix stream; half-closes it once the guest is done
    /// sending; ends a closing connection once everything is out.
    pub fn flush(&mut self) -> Result<(), Close> {
        while !self.to_stream.is_empty() {
            let (front, _) = self.to_stream.as_slices();
            let wanted = front.len();
            let written = write_some(&self.stream, self.key, front)?;
            self.to_stream.drain(..written);
            self.credit
                .forwarded(u32::try_from(written).unwrap_or(u32::MAX));
            if written < wanted {
                break;
            }
        }
        if self.credit.update_due() {
            self.send_credit_update = true;
        }
        if !self.to_stream.is_empty() {
            return Ok(());
        }
        if self.peer_shutdown & SHUTDOWN_SEND != 0 && !self.write_shut {
            self.write_shut = true;
            // The client may have gone already; its EOF is what matters.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        if self.state == State::Closing {
            return Err(RST);
        }
        Ok(())
    }

    fn header(&mut self, guest_cid: u64, op: u16) -> Header {
        let (buf_alloc, fwd_cnt) = self.credit.stamp();
        self.send_credit_update = false;
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.key.local_port,
            dst_port: self.key.peer_port,
            len: 0,
            kind: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc,
            fwd_cnt,
        }
    }

    /// Writes this connection's next packet for the guest into `writer`; returns its length,
    /// or `None` if it has nothing to send now.
    pub fn next_rx(
        &mut self,
        guest_cid: u64,
        writer: &mut Writer<'_>,
    ) -> Result<Option<u32>, Close> {
        if self.send_request {
            self.send_request = false;
            let header = self.header(guest_cid, op::REQUEST);
            return emit(writer, header, &[]).map(Some);
        }
        if self.can_send_data() {
            if let Some(len) = self.send_data(guest_cid, writer)? {
                return Ok(Some(len));
            }
        }
        if self.shutdown_to_send != 0 {
            let mut header = self.header(guest_cid, op::SHUTDOWN);
            header.flags = self.shutdown_to_send;
            self.shutdown_to_send = 0;
            return emit(writer, header, &[]).map(Some);
        }
        if self.send_credit_update {
            let header = self.header(guest_cid, op::CREDIT_UPDATE);
            return emit(writer, header, &[]).map(Some);
        }
        Ok(None)
    }

    fn send_data(&mut self, guest_cid: u64, writer: &mut Writer<'_>) -> Result<Option<u32>, Close> {
        let free = usize::try_from(self.credit.peer_free()).unwrap_or(usize::MAX);
        if free == 0 {
            if self.credit_requested {
                return Ok(None);
            }
            self.credit_requested = true;
            let header = self.header(guest_cid, op::CREDIT_REQUEST);
            return emit(writer, header, &[]).map(Some);
        }
        let room = free.min(rx_payload_room(writer));
        if room == 0 {
            return Ok(None);
        }
        if !self.has_read_ahead() && !self.read_stream(free)? {
            return Ok(None);
        }
        let (start, ahead_end) = self.ahead;
        let end = ahead_end.min(start.saturating_add(room));
        let len = u32::try_from(end.saturating_sub(start)).unwrap_or(u32::MAX);
        let mut header = self.header(guest_cid, op::RW);
        header.len = len;
        self.credit.sent(len);
        self.ahead.0 = end;
        let payload = self.from_stream.get(start..end).ok_or(RST)?;
        emit(writer, header, payload).map(Some)
    }

    /// Reads what the Unix stream has, up to `limit` (the guest's credit) and [`STREAM_READ`],
    /// into the read-ahead buffer; returns whether it got any bytes.
    fn read_stream(&mut self, limit: usize) -> Result<bool, Close> {
        if self.from_stream.is_empty() {
            self.from_stream = vec![0; STREAM_READ];
        }
        self.ahead = (0, 0);
        let buf = &mut self.from_stream[..limit.min(STREAM_READ)];
        let result = (&self.stream).read(buf);
        let got = match result {
            Ok(0) => {
                self.stream_eof = true;
                self.readable = false;
                self.shutdown_to_send |= SHUTDOWN_SEND;
                0
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                self.readable = false;
                0
            }
            Err(e) => {
                tracing::debug!("vsock: Unix stream of {:?} failed: {e}", self.key);
                return Err(RST);
            }
        };
        self.ahead = (0, got);
        Ok(got > 0)
    }
}

/// Writes a header and its payload into an RX buffer; returns the bytes used.
fn emit(writer: &mut Writer<'_>, mut header: Header, payload: &[u8]) -> Result<u32, Close> {
    header.len = u32::try_from(payload.len()).map_err(|_| RST)?;
    let written = writer
        .write_all(&header.to_bytes())
        .and_then(|()| writer.write_all(payload));
    match written {
        Ok(()) => u32::try_from(HEADER_LEN + payload.len()).map_err(|_| RST),
        Err(e) => {
            crate::warn_limited!("vsock: cannot write an RX packet into guest memory: {e}");
            Err(RST)
        }
    }
}

/// Writes what the non-blocking `stream` takes of `buf`.
fn write_some(stream: &UnixStream, key: ConnKey, buf: &[u8]) -> Result<usize, Close> {
    let mut written = 0;
    while written < buf.len() {
        match (&*stream).write(&buf[written..]) {
            Ok(0) => return Err(RST),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!("vsock: Unix stream of {key:?} failed: {e}");
                return Err(RST);
            }
        }
    }
    Ok(written)
}
