//! The API server: a Unix socket listened on by its own thread (`vmm-api`), which serves any
//! number of clients one line at a time and swaps the disk slots they name. It runs apart from
//! the vCPUs and the device workers: a slow, silent or hostile client only ever holds up other
//! API clients, never the guest. Only root and the VMM's own user may connect (SO_PEERCRED);
//! other clients are dropped. Dropping the [`Server`] stops the thread; the socket file stays
//! (the seccomp filter forbids `unlink`: the runtime removes the directory it lives in).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::lines::{Line, LineReader};
use super::protocol::{self, ProtocolError, Request};
use crate::devices::virtio::block::{Backing, DiskSlot, ImageError, SlotError};
use crate::uds::{self, AllowedPeers, BindError};

/// Token of the stop eventfd.
const STOP: u64 = 0;
/// Token of the listening socket.
const LISTENER: u64 = 1;
/// Clients get tokens from here on.
const FIRST_CLIENT: u64 = 2;
/// Clients connected at once; more are turned away with an error line.
pub const MAX_CLIENTS: usize = 16;
/// Bytes taken from a client per read.
const READ_SIZE: usize = 512;
/// Descriptors taken with one read: a request carries one, a few more are taken only to be
/// refused with their line (more end the connection). Even, so that the control buffer has
/// no alignment slack: vmm-sys-util hands back as many descriptors as asked for, and the
/// kernel could fill slack with one more that nobody would ever close.
const MAX_FDS_PER_READ: usize = 8;
/// Reads of one client per wake-up, so that a client that never pauses cannot starve others.
const READS_PER_WAKEUP: usize = 16;

/// Why the API server could not start (all but [`ServerError::Start`] are bad input).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Something else than a stale socket is in the way.
    #[error("--api {0}: exists and is in use or not a socket")]
    InUse(PathBuf),
    /// Binding the socket failed.
    #[error("--api {path}: cannot listen: {source}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The thread or its epoll set could not be created.
    #[error("cannot start the API thread: {0}")]
    Start(std::io::Error),
}

/// Why a request was refused; the message is the reply's reason.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The line is not a well-formed request.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The slot number is beyond the VM's slots.
    #[error("bad slot number {slot}: {}", slot_range(*.count))]
    NoSuchSlot {
        /// The number asked for.
        slot: u32,
        /// Slots the VM has.
        count: usize,
    },
    /// The slot is not in the state the request needs.
    #[error("slot {slot} {error}")]
    Slot {
        /// The slot.
        slot: u32,
        /// What is wrong.
        error: SlotError,
    },
    /// ATTACH came without the image's descriptor.
    #[error("missing file descriptor: ATTACH needs the image's descriptor (SCM_RIGHTS) on the request's message")]
    MissingFd,
    /// DETACH came with a descriptor.
    #[error("unexpected file descriptor: DETACH takes none")]
    UnexpectedFd,
    /// More than one descriptor came with the request.
    #[error("more than one file descriptor with one request")]
    TooManyFds,
    /// The image cannot back a slot.
    #[error("slot {slot}: {error}")]
    Image {
        /// The slot.
        slot: u32,
        /// What is wrong with the image.
        error: ImageError,
    },
}

fn slot_range(count: usize) -> String {
    match count {
        0 => "this VM has no disk slots (--disk-slots)".into(),
        1 => "this VM has 1 disk slot: 0".into(),
        n => format!("this VM has {n} disk slots: 0 to {}", n - 1),
    }
}

/// The running API server.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the socket at `path` and starts serving requests for `slots`, numbered from 0 in
    /// order.
    pub fn start(path: &Path, slots: Vec<Arc<DiskSlot>>) -> Result<Server, ServerError> {
        Self::bind(path)?.serve(slots)
    }

    /// Binds the socket at `path` (replacing a stale one; a path longer than `sun_path` is
    /// bound through its directory) without serving yet: a jailed VMM
    /// binds before its root is emptied and serves from a thread started afterwards.
    pub fn bind(path: &Path) -> Result<BoundApi, ServerError> {
        let listener = uds::bind(path).map_err(|e| match e {
            BindError::InUse => ServerError::InUse(path.to_path_buf()),
            BindError::Io(source) => ServerError::Bind {
                path: path.to_path_buf(),
                source,
            },
        })?;
        Ok(BoundApi {
            path: path.to_path_buf(),
            listener,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The API socket, bound and not yet served.
#[derive(Debug)]
pub struct BoundApi {
    path: PathBuf,
    listener: UnixListener,
}

impl BoundApi {
    /// Starts serving requests for `slots`, numbered from 0 in order, on a thread of its own.
    pub fn serve(self, slots: Vec<Arc<DiskSlot>>) -> Result<Server, ServerError> {
        match spawn(self.listener, slots) {
            Ok((stop, thread)) => Ok(Server {
                path: self.path,
                stop,
                thread: Some(thread),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                Err(ServerError::Start(e))
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            match self.stop.write(1) {
                Ok(()) => {
                    if thread.join().is_err() {
                        tracing::error!("the API thread panicked");
                    }
                }
                Err(e) => tracing::error!("cannot stop the API thread: {e}"),
            }
        }
    }
}

/// Starts the thread; returns the eventfd that stops it and its handle.
fn spawn(
    listener: UnixListener,
    slots: Vec<Arc<DiskSlot>>,
) -> std::io::Result<(EventFd, JoinHandle<()>)> {
    let stop = EventFd::new(EFD_NONBLOCK)?;
    let epoll = Epoll::new()?;
    watch(&epoll, stop.as_raw_fd(), STOP)?;
    watch(&epoll, listener.as_raw_fd(), LISTENER)?;
    let serve = Serve {
        epoll,
        listener,
        peers: AllowedPeers::of_this_process(),
        slots,
        clients: HashMap::new(),
        next_token: FIRST_CLIENT,
    };
    let thread = std::thread::Builder::new()
        .name("vmm-api".into())
        .spawn(move || serve.run())?;
    Ok((stop, thread))
}

fn watch(epoll: &Epoll, fd: i32, token: u64) -> std::io::Result<()> {
    epoll.ctl(
        ControlOperation::Add,
        fd,
        EpollEvent::new(EventSet::IN, token),
    )
}

/// The server thread's state.
struct Serve {
    epoll: Epoll,
    listener: UnixListener,
    /// Who may be served, read before the thread starts (and so before the seccomp filter).
    peers: AllowedPeers,
    slots: Vec<Arc<DiskSlot>>,
    clients: HashMap<u64, Client>,
    next_token: u64,
}

impl Serve {
    fn run(mut self) {
        let mut events = [EpollEvent::default(); 16];
        loop {
            let count = match self.epoll.wait(-1, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("API: epoll failed, no more requests are served: {e}");
                    return;
                }
            };
            for event in &events[..count] {
                match event.data() {
                    STOP => return,
                    LISTENER => self.accept(),
                    token => self.serve(token),
                }
            }
        }
    }

    /// Accepts every pending connection.
    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("API: accept failed: {e}");
                    return;
                }
            };
            if let Err(e) = self.add_client(stream) {
                tracing::warn!("API: cannot take a client: {e}");
            }
        }
    }

    fn add_client(&mut self, stream: UnixStream) -> std::io::Result<()> {
        if !self.peers.allows(&stream, "API") {
            return Ok(());
        }
        if self.clients.len() >= MAX_CLIENTS {
            let reason = format!("too many clients (at most {MAX_CLIENTS} at once)");
            // Best effort: the client is dropped either way.
            let _ = send(&stream, &protocol::refused(&reason));
            return Ok(());
        }
        stream.set_nonblocking(true)?;
        let token = self.next_token;
        self.next_token += 1;
        watch(&self.epoll, stream.as_raw_fd(), token)?;
        tracing::debug!("API: client {token} connected");
        self.clients.insert(
            token,
            Client {
                stream,
                reader: LineReader::default(),
            },
        );
        Ok(())
    }

    fn serve(&mut self, token: u64) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if client.serve(&self.slots) {
            return;
        }
        tracing::debug!("API: client {token} gone");
        if let Some(client) = self.clients.remove(&token) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                client.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
    }
}

/// One connected client.
struct Client {
    stream: UnixStream,
    reader: LineReader,
}

impl Client {
    /// Reads and answers what the client sent; false when the connection is over (end of
    /// stream, an error, or a client that does not take its replies).
    fn serve(&mut self, slots: &[Arc<DiskSlot>]) -> bool {
        let mut buf = [0u8; READ_SIZE];
        for _ in 0..READS_PER_WAKEUP {
            let (len, fds) = match receive(&self.stream, &mut buf) {
                Ok((0, _)) => return false,
                Ok(read) => read,
                Err(e) => return self.read_failed(e),
            };
            fds.iter().for_each(set_cloexec);
            for line in self.reader.push(&buf[..len], fds) {
                let reply = answer(slots, line);
                if let Err(e) = send(&self.stream, &reply) {
                    tracing::debug!("API: cannot reply to a client, dropping it: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// Whether the connection survives a failed read.
    fn read_failed(&self, error: vmm_sys_util::errno::Error) -> bool {
        match error.errno() {
            libc::EAGAIN | libc::EINTR => true,
            libc::ENOBUFS => {
                // More than MAX_FDS_PER_READ descriptors: they were closed and the bytes that
                // came with them are lost, so their line cannot be answered: end the connection.
                let _ = send(&self.stream, &protocol::refused(&Refusal::TooManyFds));
                false
            }
            _ => {
                tracing::debug!("API: read failed: {error}");
                false
            }
        }
    }
}

/// Reads bytes and the descriptors that came with them into `buf`.
fn receive(
    stream: &UnixStream,
    buf: &mut [u8],
) -> Result<(usize, Vec<File>), vmm_sys_util::errno::Error> {
    let mut iovecs = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    let mut raw = [-1; MAX_FDS_PER_READ];
    // SAFETY: the only iovec points at `buf`, which is valid for writes of its whole length
    // and not otherwise used during the call; the kernel writes at most that many bytes.
    let (len, count) = unsafe { stream.recv_with_fds(&mut iovecs, &mut raw) }?;
    let files = raw[..count.min(MAX_FDS_PER_READ)]
        .iter()
        .map(|&fd| {
            // SAFETY: recvmsg has just installed `fd` in this process for us; nothing else
            // owns it, and it is wrapped exactly once.
            File::from(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect();
    Ok((len, files))
}

/// Marks a received descriptor close-on-exec (recvmsg made it without the flag).
fn set_cloexec(file: &File) {
    // SAFETY: F_SETFD only changes the descriptor flags of a descriptor we own; no memory is
    // passed.
    let result = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    if result < 0 {
        tracing::debug!(
            "API: cannot set FD_CLOEXEC: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn send(mut stream: &UnixStream, reply: &str) -> std::io::Result<()> {
    stream.write_all(format!("{reply}\n").as_bytes())
}

/// The reply line to `line`.
fn answer(slots: &[Arc<DiskSlot>], line: Line) -> String {
    match execute(slots, line) {
        Ok(reply) => reply,
        Err(refusal) => {
            tracing::debug!("API: refused: {refusal}");
            protocol::refused(&refusal)
        }
    }
}

fn execute(slots: &[Arc<DiskSlot>], line: Line) -> Result<String, Refusal> {
    let Line {
        text,
        fd,
        extra_fds,
    } = line;
    let request = protocol::parse(&text?)?;
    if extra_fds {
        return Err(Refusal::TooManyFds);
    }
    match request {
        Request::Attach { slot, serial } => {
            let fd = fd.ok_or(Refusal::MissingFd)?;
            attach(slots, slot, &serial, fd)
        }
        Request::Detach { slot } => {
            if fd.is_some() {
                return Err(Refusal::UnexpectedFd);
            }
            detach(slots, slot)
        }
    }
}

fn slot(slots: &[Arc<DiskSlot>], slot: u32) -> Result<&DiskSlot, Refusal> {
    usize::try_from(slot)
        .ok()
        .and_then(|index| slots.get(index))
        .map(AsRef::as_ref)
        .ok_or(Refusal::NoSuchSlot {
            slot,
            count: slots.len(),
        })
}

fn attach(slots: &[Arc<DiskSlot>], n: u32, serial: &str, fd: File) -> Result<String, Refusal> {
    let target = slot(slots, n)?;
    let backing =
        Backing::read_only_image(fd, serial).map_err(|error| Refusal::Image { slot: n, error })?;
    let sectors = target
        .attach(backing)
        .map_err(|error| Refusal::Slot { slot: n, error })?;
    tracing::info!("API: slot {n} attached: serial {serial}, {sectors} sectors");
    Ok(protocol::attached(n, sectors))
}

fn detach(slots: &[Arc<DiskSlot>], n: u32) -> Result<String, Refusal> {
    slot(slots, n)?
        .detach()
        .map_err(|error| Refusal::Slot { slot: n, error })?;
    tracing::info!("API: slot {n} detached");
    Ok(protocol::detached(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(count: usize) -> Vec<Arc<DiskSlot>> {
        (0..count).map(|_| Arc::new(DiskSlot::new(None))).collect()
    }

    fn line(text: &str, fd: Option<File>) -> Line {
        Line {
            text: Ok(text.as_bytes().to_vec()),
            fd,
            extra_fds: false,
        }
    }

    fn image(dir: &tempfile::TempDir, bytes: usize) -> File {
        let path = dir.path().join(format!("image-{bytes}"));
        std::fs::write(&path, vec![1u8; bytes]).unwrap();
        File::open(path).unwrap()
    }

    #[test]
    fn requests_swap_slots_and_refusals_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let slots = slots(2);
        let ask = |text: &str, fd: Option<File>| answer(&slots, line(text, fd));
        assert_eq!(ask("ATTACH 1 s1", Some(image(&dir, 4096))), "OK 1 8");
        assert_eq!(slots[1].capacity(), 8);
        assert_eq!(
            ask("ATTACH 1 s1", Some(image(&dir, 512))),
            "ERR slot 1 is already attached"
        );
        assert_eq!(
            ask("ATTACH 2 s", Some(image(&dir, 512))),
            "ERR bad slot number 2: this VM has 2 disk slots: 0 to 1"
        );
        assert_eq!(
            ask("ATTACH 0 s", None),
            "ERR missing file descriptor: ATTACH needs the image's descriptor (SCM_RIGHTS) on the request's message"
        );
        assert_eq!(
            ask("ATTACH 0 s", Some(image(&dir, 1000))),
            "ERR slot 0: the image's size, 1000 bytes, is not a multiple of 512"
        );
        assert_eq!(
            ask("DETACH 1", Some(image(&dir, 512))),
            "ERR unexpected file descriptor: DETACH takes none"
        );
        assert_eq!(ask("DETACH 1", None), "OK 1");
        assert_eq!(ask("DETACH 1", None), "ERR slot 1 is not attached");
        assert_eq!(slots[1].capacity(), 0);
        assert_eq!(
            answer(
                &slots,
                Line {
                    text: Ok(b"ATTACH 0 s".to_vec()),
                    fd: Some(image(&dir, 512)),
                    extra_fds: true,
                }
            ),
            "ERR more than one file descriptor with one request"
        );
        assert_eq!(
            answer(
                &slots,
                Line {
                    text: Err(ProtocolError::LineTooLong),
                    fd: None,
                    extra_fds: false,
                }
            ),
            "ERR line too long (more than 256 bytes)"
        );
        assert!(ask("FORMAT 0", None).starts_with("ERR unknown command \"FORMAT\""));
        assert_eq!(slots[0].capacity(), 0, "no refused request changed a slot");
        assert_eq!(
            answer(&[], line("DETACH 0", None)),
            "ERR bad slot number 0: this VM has no disk slots (--disk-slots)"
        );
    }

    #[test]
    fn bad_paths_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("x".repeat(120));
        let err = Server::start(&long, Vec::new()).unwrap_err().to_string();
        assert!(
            err.starts_with("--api ") && err.contains("file name is longer than"),
            "{err}"
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = Server::start(&file, Vec::new()).unwrap_err().to_string();
        assert!(err.contains("in use or not a socket"), "{err}");
        let missing = dir.path().join("no/such/dir/api.sock");
        assert!(matches!(
            Server::start(&missing, Vec::new()),
            Err(ServerError::Bind { .. })
        ));
    }
}
