//! The virtio-vsock device: its configuration space (the guest's CID), its three queues (RX,
//! TX, event), the Unix socket it is reached through, and the queue processing on its worker.
//! The socket file stays when the device is dropped (the seccomp filter forbids `unlink`; the
//! runtime removes its directory).

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::muxer::Muxer;
use super::packet::{parse_tx, rx_writer};
use crate::devices::virtio::worker::{Poller, QueueHandler, Worker};
use crate::devices::virtio::{
    ActivateError, ActiveQueues, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::uds::{AllowedPeers, BindError};

/// Virtio device ID of a socket device.
const VIRTIO_ID_VSOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
/// Entries in each queue.
const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;

/// Why the device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// Something else than a stale socket is in the way.
    #[error("--vsock uds={0}: exists and is in use or not a socket")]
    InUse(PathBuf),
    /// Binding or configuring the listener failed.
    #[error("--vsock uds={path}: cannot listen: {source}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The vsock device.
#[derive(Debug)]
pub struct Vsock {
    cid: u64,
    uds: PathBuf,
    listener: UnixListener,
    /// Who may connect, read when the device is made (before the seccomp filter).
    peers: AllowedPeers,
    worker: Option<Worker>,
}

impl Vsock {
    /// A device for guest `cid` that host processes reach through a Unix socket bound at `uds`
    /// now (a stale socket there nobody listens on is replaced). Only root and the VMM's own
    /// user may connect to it.
    pub fn new(cid: u64, uds: &Path) -> Result<Vsock, VsockError> {
        Self::with_peers(cid, uds, AllowedPeers::of_this_process())
    }

    /// [`Vsock::new`] accepting host clients of `peers` only.
    pub fn with_peers(cid: u64, uds: &Path, peers: AllowedPeers) -> Result<Vsock, VsockError> {
        let listener = bind(uds)?;
        Ok(Vsock {
            cid,
            uds: uds.to_path_buf(),
            listener,
            peers,
            worker: None,
        })
    }
}

/// Binds a non-blocking listener at `uds` (through its directory if the path is longer than
/// `sun_path`).
pub fn bind(uds: &Path) -> Result<UnixListener, VsockError> {
    crate::uds::bind(uds).map_err(|e| match e {
        BindError::InUse => VsockError::InUse(uds.to_path_buf()),
        BindError::Io(source) => VsockError::Bind {
            path: uds.to_path_buf(),
            source,
        },
    })
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.worker = None;
    }
}

impl VirtioDevice for Vsock {
    fn name(&self) -> &'static str {
        "vsock"
    }

    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX
    }

    /// `struct virtio_vsock_config { le64 guest_cid; }`.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.cid.to_le_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|at| config.get(at))
                .copied()
                .unwrap_or(0);
        }
    }

    fn activate(&mut self, context: ActiveQueues) -> Result<(), ActivateError> {
        let ActiveQueues {
            mem,
            queues,
            notifiers,
            interrupt,
            ..
        } = context;
        let bad = |reason: &str| ActivateError::BadConfig {
            device: "vsock",
            reason: reason.into(),
        };
        let [rx, tx, _event]: [Queue; 3] = queues
            .try_into()
            .map_err(|_| bad("expected 3 queues (rx, tx, event)"))?;
        let worker_error = |source| ActivateError::Worker {
            device: "vsock",
            source,
        };
        let listener = self.listener.try_clone().map_err(worker_error)?;
        let muxer = Muxer::new(self.cid, &self.uds, listener, self.peers).map_err(worker_error)?;
        let handler = VsockHandler {
            mem,
            rx,
            tx,
            interrupt,
            muxer,
        };
        self.worker = Some(Worker::spawn("vsock", handler, notifiers).map_err(worker_error)?);
        Ok(())
    }

    /// Stopping the worker drops the muxer: every connection's stream closes. Host clients
    /// still in the listener's backlog wait for the next activation.
    fn reset(&mut self) {
        self.worker = None;
    }
}

/// The vsock's queue processing, on its worker thread. The event queue's buffers are kept
/// unused: the device never moves the guest to another CID, so it never sends a transport
/// reset (a device reset drops every connection and the driver starts over).
struct VsockHandler {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<Interrupt>,
    muxer: Muxer,
}

impl VsockHandler {
    /// Drains the TX queue: every packet is handed to the muxer (or dropped if malformed), and
    /// its buffer returned. The guest's credit bounds what the muxer must buffer. The guest's
    /// notifications are off while the queue is drained and back on when it is empty (with
    /// EVENT_IDX: one kick for the next packet, none for those found while draining).
    fn process_tx(&mut self, poller: &Poller) {
        if let Err(e) = self.drain_tx(poller) {
            self.interrupt.mark_broken("vsock", &e);
        }
    }

    fn drain_tx(&mut self, poller: &Poller) -> Result<(), virtio_queue::Error> {
        let mut returned = false;
        loop {
            self.tx.disable_notification(&self.mem)?;
            loop {
                let next = self.tx.iter(&self.mem)?.next();
                let Some(chain) = next else { break };
                let head = chain.head_index();
                match parse_tx(&self.mem, chain) {
                    Ok(mut packet) => {
                        self.muxer
                            .handle_tx(poller, &packet.header, &mut packet.payload)
                    }
                    Err(e) => tracing::debug!("{e}"),
                }
                self.tx.add_used(&self.mem, head, 0)?;
                returned = true;
            }
            if !self.tx.enable_notification(&self.mem)? {
                break;
            }
        }
        if returned {
            notify(&self.mem, &mut self.tx, &self.interrupt);
        }
        Ok(())
    }

    /// Fills RX buffers with whatever the muxer has for the guest.
    fn process_rx(&mut self, poller: &Poller) {
        if let Err(e) = self.fill_rx(poller) {
            self.interrupt.mark_broken("vsock", &e);
        }
    }

    fn fill_rx(&mut self, poller: &Poller) -> Result<(), virtio_queue::Error> {
        let mut returned = false;
        while self.muxer.has_rx_work() {
            let next = self.rx.iter(&self.mem)?.next();
            let Some(chain) = next else {
                // Out of buffers: the guest's next one must be announced (with EVENT_IDX the
                // avail event is otherwise left behind); one added meanwhile is used at once.
                if self.rx.enable_notification(&self.mem)? {
                    continue;
                }
                break;
            };
            let head = chain.head_index();
            let len = match rx_writer(&self.mem, chain) {
                Ok(mut writer) => match self.muxer.next_rx(poller, &mut writer) {
                    Some(len) => len,
                    None => {
                        self.rx.go_to_previous_position();
                        break;
                    }
                },
                Err(e) => {
                    tracing::debug!("{e}");
                    0
                }
            };
            self.rx.add_used(&self.mem, head, len)?;
            returned = true;
        }
        if returned {
            notify(&self.mem, &mut self.rx, &self.interrupt);
        }
        Ok(())
    }
}

fn notify(mem: &GuestMemoryMmap, queue: &mut Queue, interrupt: &Interrupt) {
    match queue.needs_notification(mem) {
        Ok(true) => interrupt.signal_used_queue(),
        Ok(false) => {}
        Err(e) => interrupt.mark_broken("vsock", &e),
    }
}

impl QueueHandler for VsockHandler {
    fn start(&mut self, poller: &Poller) {
        self.muxer.start(poller);
    }

    fn queue_notified(&mut self, poller: &Poller, index: usize) {
        if self.interrupt.is_broken() {
            return;
        }
        match index {
            TX => self.process_tx(poller),
            RX | EVENT => {}
            _ => return,
        }
        self.process_rx(poller);
    }

    fn backend_event(
        &mut self,
        poller: &Poller,
        token: u64,
        events: vmm_sys_util::epoll::EventSet,
    ) {
        if self.interrupt.is_broken() {
            return;
        }
        self.muxer.backend_event(poller, token, events);
        self.process_rx(poller);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::devices::virtio::vsock::packet::{op, Header, HEADER_LEN, HOST_CID, TYPE_STREAM};

    const WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;
    const RX_BUFFERS: u64 = 0x10_0000;
    const TX_BUFFERS: u64 = 0x20_0000;
    const BUFFER: u32 = 4096 + HEADER_LEN as u32;
    /// The mock places a used ring over the end of its avail ring for 16 entries: ours go here.
    const RX_USED: u64 = 0x800;
    const TX_USED: u64 = 0x1_0800;
    /// Where a 16-entry used ring keeps `avail_event`, after its header and elements.
    const AVAIL_EVENT: u64 = 4 + 8 * 16;

    fn queue(mock: &MockSplitQueue<'_, GuestMemoryMmap>, used: u64) -> Queue {
        let mut queue: Queue = mock.create_queue().unwrap();
        queue.try_set_used_ring_address(GuestAddress(used)).unwrap();
        queue
    }

    /// A guest driver stand-in: the device's queues in guest memory, filled and read by hand.
    struct Guest<'a> {
        mem: &'a GuestMemoryMmap,
        rx: MockSplitQueue<'a, GuestMemoryMmap>,
        tx: MockSplitQueue<'a, GuestMemoryMmap>,
        tx_kick: EventFd,
        rx_seen: u16,
        tx_sent: u16,
    }

    impl Guest<'_> {
        fn wait_rx(&mut self) -> (Header, Vec<u8>) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.mem.read_obj::<u16>(GuestAddress(RX_USED + 2)).unwrap() == self.rx_seen {
                assert!(Instant::now() < deadline, "no RX packet from the device");
                std::thread::sleep(Duration::from_millis(1));
            }
            // The used element, read straight from the ring: id then length.
            let at = RX_USED + 4 + 8 * u64::from(self.rx_seen);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let used_len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            let addr = RX_BUFFERS + u64::from(id) * u64::from(BUFFER);
            self.rx_seen += 1;
            let mut bytes = [0u8; HEADER_LEN];
            self.mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
            let header = Header::from_bytes(&bytes);
            let mut payload = vec![0u8; header.len as usize];
            self.mem
                .read_slice(&mut payload, GuestAddress(addr + HEADER_LEN as u64))
                .unwrap();
            assert_eq!(used_len as usize, HEADER_LEN + payload.len());
            (header, payload)
        }

        fn send(&mut self, op: u16, flags: u32, payload: &[u8]) {
            self.send_ports(1024, 1 << 30, op, flags, payload);
        }

        fn send_ports(&mut self, src: u32, dst: u32, op: u16, flags: u32, payload: &[u8]) {
            let header = Header {
                src_cid: 3,
                dst_cid: HOST_CID,
                src_port: src,
                dst_port: dst,
                len: payload.len() as u32,
                kind: TYPE_STREAM,
                op,
                flags,
                buf_alloc: 64 * 1024,
                fwd_cnt: 0,
            };
            let addr = TX_BUFFERS + u64::from(self.tx_sent) * u64::from(BUFFER);
            self.mem
                .write_slice(&header.to_bytes(), GuestAddress(addr))
                .unwrap();
            self.mem
                .write_slice(payload, GuestAddress(addr + HEADER_LEN as u64))
                .unwrap();
            let len = (HEADER_LEN + payload.len()) as u32;
            let desc = RawDescriptor::from(SplitDescriptor::new(addr, len, 0, 0));
            self.tx.add_desc_chains(&[desc], self.tx_sent).unwrap();
            self.tx_sent += 1;
            self.tx_kick.write(1).unwrap();
        }
    }

    /// Activates `vsock` on fresh queues in `mem` with `rx_buffers` RX buffers posted;
    /// returns the guest stand-in, the interrupt and the RX queue's kick.
    fn activate<'a>(
        vsock: &mut Vsock,
        mem: &'a GuestMemoryMmap,
        rx_buffers: u16,
        event_idx: bool,
    ) -> (Guest<'a>, Arc<Interrupt>, EventFd) {
        let rx = MockSplitQueue::create(mem, GuestAddress(0), 16);
        let tx = MockSplitQueue::create(mem, GuestAddress(0x1_0000), 16);
        let event = MockSplitQueue::create(mem, GuestAddress(0x2_0000), 16);
        let buffers: Vec<RawDescriptor> = (0..u64::from(rx_buffers))
            .map(|i| {
                let addr = RX_BUFFERS + i * u64::from(BUFFER);
                RawDescriptor::from(SplitDescriptor::new(addr, BUFFER, WRITE, 0))
            })
            .collect();
        rx.add_desc_chains(&buffers, 0).unwrap();
        let notifiers: Vec<EventFd> = (0..3).map(|_| EventFd::new(0).unwrap()).collect();
        let tx_kick = notifiers[TX].try_clone().unwrap();
        let rx_kick = notifiers[RX].try_clone().unwrap();
        let interrupt = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
        let mut queues = vec![
            queue(&rx, RX_USED),
            queue(&tx, TX_USED),
            queue(&event, 0x2_0800),
        ];
        let mut features = VIRTIO_F_VERSION_1;
        if event_idx {
            features |= VIRTIO_RING_F_EVENT_IDX;
            queues.iter_mut().for_each(|q| q.set_event_idx(true));
        }
        vsock
            .activate(ActiveQueues {
                mem: mem.clone(),
                queues,
                notifiers,
                interrupt: interrupt.clone(),
                features,
            })
            .unwrap();
        let guest = Guest {
            mem,
            rx,
            tx,
            tx_kick,
            rx_seen: 0,
            tx_sent: 0,
        };
        (guest, interrupt, rx_kick)
    }

    #[test]
    fn host_initiated_connection_relays_and_closes() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut vsock = Vsock::new(3, &uds).unwrap();
        let mut config = [0u8; 8];
        vsock.read_config(0, &mut config);
        assert_eq!(u64::from_le_bytes(config), 3);
        assert_ne!(vsock.device_features() & VIRTIO_RING_F_EVENT_IDX, 0);

        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let (mut guest, interrupt, _rx_kick) = activate(&mut vsock, &mem, 16, false);

        let mut client = UnixStream::connect(&uds).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.write_all(b"CONNECT 1024\n").unwrap();
        let (request, _) = guest.wait_rx();
        assert_eq!(
            (
                request.op,
                request.dst_port,
                request.src_port,
                request.dst_cid
            ),
            (op::REQUEST, 1024, 1 << 30, 3)
        );
        guest.send(op::RESPONSE, 0, &[]);
        let mut reply = [0u8; 14];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"OK 1073741824\n");

        client.write_all(b"ping").unwrap();
        let (data, payload) = guest.wait_rx();
        assert_eq!((data.op, payload.as_slice()), (op::RW, &b"ping"[..]));
        guest.send(op::RW, 0, b"pong");
        let mut pong = [0u8; 4];
        client.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"pong");

        // The guest closes: the client sees EOF, the guest gets its reset.
        guest.send(op::SHUTDOWN, 3, &[]);
        let (rst, _) = guest.wait_rx();
        assert_eq!(rst.op, op::RST);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(!interrupt.is_broken());

        vsock.reset();
        drop(vsock);
        assert!(
            uds.exists(),
            "the VMM never removes its socket (no unlink under seccomp)"
        );
    }

    /// A guest connecting to a host port gets a reset, whatever the port and whether or not
    /// a socket `<uds>_<port>` exists, and no socket is made: the device runs in a child
    /// process under the enforced seccomp filter (installed before activation, as in the VMM),
    /// where making or connecting a socket would kill it. Host-initiated connections still
    /// work there.
    #[test]
    fn guest_initiated_connections_are_reset() {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "devices::virtio::vsock::device::tests::enforcing_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RVM_VSOCK_CHILD_DIR", dir.path())
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{:?}: {stderr}", output.status);
        assert!(stderr.contains("VSOCK-CHILD-DONE"), "{stderr}");
    }

    /// The child's side of [`guest_initiated_connections_are_reset`]; does nothing in a normal
    /// test run.
    #[test]
    fn enforcing_child() {
        let Some(dir) = std::env::var_os("RVM_VSOCK_CHILD_DIR") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let uds = dir.join("v.sock");
        let mut vsock = Vsock::new(3, &uds).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        // What the VMM once connected guest connections to.
        let old_listener = UnixListener::bind(dir.join("v.sock_5000")).unwrap();
        old_listener.set_nonblocking(true).unwrap();
        // A host client, connected before the filter (the test cannot connect after it).
        let mut client = UnixStream::connect(&uds).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        crate::seccomp::install(crate::seccomp::SeccompMode::Enforce).unwrap();

        let (mut guest, interrupt, _rx_kick) = activate(&mut vsock, &mem, 16, false);
        for (src, dst) in [(2000, 5000), (2001, 5001), (2002, 1024)] {
            guest.send_ports(src, dst, op::REQUEST, 0, &[]);
            let (rst, payload) = guest.wait_rx();
            assert_eq!(
                (rst.op, rst.src_port, rst.dst_port, rst.src_cid, rst.dst_cid),
                (op::RST, dst, src, HOST_CID, 3)
            );
            assert!(payload.is_empty());
        }
        assert!(
            matches!(old_listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "nothing connected to <uds>_5000"
        );
        // Data for the refused connection is answered with a reset too.
        guest.send_ports(2000, 5000, op::RW, 0, b"data");
        let (rst, _) = guest.wait_rx();
        assert_eq!((rst.op, rst.dst_port), (op::RST, 2000));

        // The host client is accepted (peer credentials read) and relayed under the filter.
        client.write_all(b"CONNECT 1024\n").unwrap();
        let (request, _) = guest.wait_rx();
        assert_eq!((request.op, request.dst_port), (op::REQUEST, 1024));
        guest.send(op::RESPONSE, 0, &[]);
        let mut reply = [0u8; 14];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"OK 1073741824\n");
        client.write_all(b"ping").unwrap();
        let (data, payload) = guest.wait_rx();
        assert_eq!((data.op, payload.as_slice()), (op::RW, &b"ping"[..]));
        assert!(!interrupt.is_broken());
        vsock.reset();
        drop(vsock);
        eprintln!("VSOCK-CHILD-DONE");
    }

    /// Host clients of users other than root and the VMM's own are dropped when accepted,
    /// before their CONNECT line is read: the guest never hears of them. Run as root (which is
    /// always allowed), the client is this test binary again as `nobody`.
    #[test]
    fn host_clients_of_other_users_are_dropped() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;

        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let peers = AllowedPeers::with_own_uid(if euid == 0 { 0 } else { euid + 1 });
        let mut vsock = Vsock::with_peers(3, &uds, peers).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let (guest, interrupt, _rx_kick) = activate(&mut vsock, &mem, 16, false);
        let read = if euid == 0 {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(&uds, std::fs::Permissions::from_mode(0o777)).unwrap();
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "devices::virtio::vsock::device::tests::foreign_client",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("RVM_VSOCK_FOREIGN", &uds)
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(output.status.success(), "{stderr}");
            stderr
                .lines()
                .find_map(|l| l.strip_prefix("FOREIGN-READ "))
                .unwrap_or_else(|| panic!("{stderr}"))
                .to_owned()
        } else {
            foreign_connect(&uds).to_string()
        };
        assert_eq!(read, "0", "the client got nothing but EOF");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            mem.read_obj::<u16>(GuestAddress(RX_USED + 2)).unwrap(),
            guest.rx_seen,
            "the guest was sent nothing"
        );
        assert!(!interrupt.is_broken());
        vsock.reset();
    }

    /// Connects to `uds`, asks for guest port 1024 and reads until EOF (or a reset: the
    /// VMM closed the connection without reading the line); the bytes read, `usize::MAX` if
    /// the read failed otherwise (a timeout: the connection was kept).
    fn foreign_connect(uds: &Path) -> usize {
        let mut client = UnixStream::connect(uds).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = client.write_all(b"CONNECT 1024\n");
        let mut rest = Vec::new();
        match client.read_to_end(&mut rest) {
            Ok(_) => rest.len(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => rest.len(),
            Err(_) => usize::MAX,
        }
    }

    /// The other user's client of [`host_clients_of_other_users_are_dropped`]; does nothing in
    /// a normal test run.
    #[test]
    fn foreign_client() {
        let Some(uds) = std::env::var_os("RVM_VSOCK_FOREIGN") else {
            return;
        };
        eprintln!("FOREIGN-READ {}", foreign_connect(Path::new(&uds)));
    }

    /// With EVENT_IDX the guest kicks only when the device asked: after the TX queue is
    /// drained, for the next packet; when RX buffers run out with data waiting, for the next
    /// buffer. A device that forgot to ask would stall the connection.
    #[test]
    fn event_idx_asks_for_the_kicks_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut vsock = Vsock::new(3, &uds).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let (mut guest, interrupt, rx_kick) = activate(&mut vsock, &mem, 2, true);
        // Waits until the device asks for a kick at avail index `at` of the queue at `used`.
        let wait_avail_event = |used: u64, at: u16| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while mem
                .read_obj::<u16>(GuestAddress(used + AVAIL_EVENT))
                .unwrap()
                != at
            {
                assert!(Instant::now() < deadline, "no kick asked for at index {at}");
                std::thread::sleep(Duration::from_millis(1));
            }
        };

        let mut client = UnixStream::connect(&uds).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.write_all(b"CONNECT 1024\n").unwrap();
        let (request, _) = guest.wait_rx();
        assert_eq!(request.op, op::REQUEST);
        guest.send(op::RESPONSE, 0, &[]);
        let mut reply = [0u8; 14];
        client.read_exact(&mut reply).unwrap();
        wait_avail_event(TX_USED, 1);

        // One RX buffer is left for 8 KiB of data: the device fills it, then asks for a kick
        // at the next buffer the guest posts (avail index 2).
        client.write_all(&[7u8; 8192]).unwrap();
        let (first, payload) = guest.wait_rx();
        assert_eq!((first.op, payload.len()), (op::RW, 4096));
        wait_avail_event(RX_USED, 2);
        let addr = RX_BUFFERS + 2 * u64::from(BUFFER);
        let desc = RawDescriptor::from(SplitDescriptor::new(addr, BUFFER, WRITE, 0));
        guest.rx.add_desc_chains(&[desc], 2).unwrap();
        rx_kick.write(1).unwrap();
        let (second, payload) = guest.wait_rx();
        assert_eq!(
            (second.op, payload, interrupt.is_broken()),
            (op::RW, vec![7u8; 4096], false)
        );
        vsock.reset();
    }

    /// An available index more than a queue's size ahead is a broken ring: the device stops
    /// instead of looking for chains that are not there.
    #[test]
    fn runaway_avail_index_breaks_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut vsock = Vsock::new(3, &uds).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let (guest, interrupt, _rx_kick) = activate(&mut vsock, &mem, 2, true);
        // The TX avail ring's index, at the mock's avail ring + 2.
        let tx_avail_idx = guest.tx.avail_addr().unchecked_add(2);
        mem.write_obj(1000u16, tx_avail_idx).unwrap();
        guest.tx_kick.write(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !interrupt.is_broken() {
            assert!(
                Instant::now() < deadline,
                "the device did not give up on the ring"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        vsock.reset();
    }

    #[test]
    fn socket_path_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        // A path longer than sun_path is bound through its directory.
        let deep = dir.path().join("d".repeat(100));
        std::fs::create_dir(&deep).unwrap();
        let long = deep.join("v.sock");
        let _long = bind(&long).unwrap();
        assert!(
            UnixStream::connect(&long).is_err(),
            "too long for a plain connect"
        );
        assert!(crate::uds::connect(&long).is_ok());
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = bind(&file).unwrap_err().to_string();
        assert!(
            err.contains("--vsock uds=") && err.contains("file"),
            "{err}"
        );
        let missing = dir.path().join("no/such/dir/v.sock");
        assert!(matches!(bind(&missing), Err(VsockError::Bind { .. })));
        // A live socket is in use; a stale one (nobody listening) is replaced.
        let uds = dir.path().join("v.sock");
        let live = bind(&uds).unwrap();
        assert!(matches!(bind(&uds), Err(VsockError::InUse(_))));
        drop(live);
        assert!(bind(&uds).is_ok());
    }
}
