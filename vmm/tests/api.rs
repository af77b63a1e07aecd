//! The host API end to end over a real Unix socket, without a guest: the server on its thread,
//! the library's client and raw clients that misbehave; the disk slots behind it are the
//! block devices' own ([`Block::empty_slot`]), so every check also reads the device side
//! (config-space capacity, generation, config interrupt, GET_ID's ID). The last test runs the
//! same under the VMM's enforced seccomp filter.

// Test helpers panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rvm_vmm::api::{self, Client, ClientError, Server, MAX_CLIENTS};
use rvm_vmm::devices::virtio::block::{Block, DiskSlot};
use rvm_vmm::devices::virtio::{Interrupt, VirtioDevice};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// The interrupt status bit of a configuration change.
const CONFIG_CHANGED: u32 = 2;

/// Two disk slots behind a server, each as its block device with an active driver's interrupt.
struct Vm {
    dir: tempfile::TempDir,
    socket: PathBuf,
    blocks: Vec<Block>,
    interrupts: Vec<Arc<Interrupt>>,
    server: Option<Server>,
}

impl Vm {
    fn new() -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let blocks: Vec<Block> = (0..2).map(|_| Block::empty_slot()).collect();
        let interrupts: Vec<Arc<Interrupt>> = blocks
            .iter()
            .map(|block| {
                let interrupt = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
                block.slot().activated(Arc::clone(&interrupt));
                interrupt
            })
            .collect();
        let slots: Vec<Arc<DiskSlot>> = blocks.iter().map(Block::slot).collect();
        let server = Server::start(&socket, slots).unwrap();
        Vm {
            dir,
            socket,
            blocks,
            interrupts,
            server: Some(server),
        }
    }

    /// Capacity as the driver reads it from the configuration space.
    fn capacity(&self, slot: usize) -> u64 {
        let mut bytes = [0u8; 8];
        self.blocks[slot].read_config(0, &mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn generation(&self, slot: usize) -> u32 {
        self.blocks[slot].config_generation()
    }

    /// The ID GET_ID answers, NULs cut.
    fn serial(&self, slot: usize) -> String {
        let id = self.blocks[slot]
            .slot()
            .current()
            .map_or([0; 20], |backing| backing.id);
        String::from_utf8(id.into_iter().take_while(|&b| b != 0).collect()).unwrap()
    }

    /// Whether a config change was signalled since the last call.
    fn config_changed(&self, slot: usize) -> bool {
        let changed = self.interrupts[slot].status() & CONFIG_CHANGED != 0;
        self.interrupts[slot].ack(CONFIG_CHANGED);
        changed
    }

    /// A file of `sectors` sectors whose bytes are `byte`, opened read-only.
    fn image(&self, name: &str, len: usize, byte: u8) -> File {
        let path = self.dir.path().join(name);
        std::fs::write(&path, vec![byte; len]).unwrap();
        File::open(path).unwrap()
    }

    fn raw(&self) -> Raw {
        Raw::connect(&self.socket)
    }
}

/// A client speaking the protocol by hand.
struct Raw {
    stream: UnixStream,
    replies: BufReader<UnixStream>,
}

impl Raw {
    fn connect(socket: &Path) -> Raw {
        let stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let replies = BufReader::new(stream.try_clone().unwrap());
        Raw { stream, replies }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn send_with_fd(&mut self, bytes: &[u8], file: &File) {
        let sent = self.stream.send_with_fd(bytes, file.as_raw_fd()).unwrap();
        assert_eq!(sent, bytes.len());
    }

    fn reply(&mut self) -> String {
        let mut line = String::new();
        self.replies.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "{line:?}");
        line.trim_end().to_string()
    }

    fn ask(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.reply()
    }
}

fn refused(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn attach_and_detach_swap_the_slot_the_driver_sees() {
    let vm = Vm::new();
    assert_eq!(
        (vm.capacity(0), vm.generation(0), vm.serial(0)),
        (0, 0, String::new())
    );
    let mut client = Client::connect(&vm.socket).unwrap();
    let image = vm.image("layer0.erofs", 8 * 512, 0xaa);
    assert_eq!(client.attach(0, "layer-0", &image).unwrap(), 8);
    assert_eq!((vm.capacity(0), vm.generation(0)), (8, 1));
    assert_eq!(vm.serial(0), "layer-0");
    assert!(vm.config_changed(0));
    assert_eq!(
        (vm.capacity(1), vm.generation(1)),
        (0, 0),
        "slot 1 untouched"
    );
    assert!(!vm.config_changed(1));
    let mut first = [0u8; 4];
    let backing = vm.blocks[0].slot().current().unwrap();
    std::os::unix::fs::FileExt::read_exact_at(&*backing.file, &mut first, 0).unwrap();
    assert_eq!(first, [0xaa; 4], "the slot serves the file that was sent");

    assert_eq!(
        refused(client.attach(0, "again", &image)),
        "slot 0 is already attached"
    );
    assert_eq!(
        refused(client.attach(2, "x", &image)),
        "bad slot number 2: this VM has 2 disk slots: 0 to 1"
    );
    assert!(refused(client.attach(1, "x", &vm.image("odd", 1000, 0))).contains("1000 bytes"));
    assert_eq!(vm.generation(0), 1, "refusals change nothing");

    client.detach(0).unwrap();
    assert_eq!(
        (vm.capacity(0), vm.generation(0), vm.serial(0)),
        (0, 2, String::new())
    );
    assert!(vm.config_changed(0));
    assert_eq!(refused(client.detach(0)), "slot 0 is not attached");
    assert_eq!(
        backing.sectors, 8,
        "a request's snapshot keeps its file after the detach"
    );

    // Later clients, one after another, and the one-shot helpers.
    drop(client);
    let other = vm.image("layer1.erofs", 512, 1);
    assert_eq!(
        api::client::attach(&vm.socket, 1, "layer-1", &other).unwrap(),
        1
    );
    assert_eq!((vm.capacity(1), vm.serial(1)), (1, "layer-1".to_string()));
    api::client::detach(&vm.socket, 1).unwrap();
    assert_eq!(vm.capacity(1), 0);
}

#[test]
fn the_client_refuses_serials_that_would_break_the_line() {
    let vm = Vm::new();
    let image = vm.image("a", 512, 0);
    let mut client = Client::connect(&vm.socket).unwrap();
    for serial in ["a\nDETACH 1", "two words", "", "123456789012345678901"] {
        assert!(
            matches!(
                client.attach(0, serial, &image),
                Err(ClientError::Serial(_))
            ),
            "{serial:?}"
        );
    }
    assert_eq!(vm.generation(0), 0);
    assert!(matches!(
        Client::connect(&vm.dir.path().join("missing.sock")),
        Err(ClientError::Connect { .. })
    ));
}

#[test]
fn every_bad_request_gets_an_error_line_and_the_connection_goes_on() {
    let vm = Vm::new();
    let image = vm.image("a", 1024, 0);
    let mut raw = vm.raw();
    assert!(raw
        .ask("HELLO")
        .starts_with("ERR unknown command \"HELLO\""));
    assert!(raw.ask("").starts_with("ERR empty request"));
    assert_eq!(
        raw.ask("ATTACH x s"),
        "ERR bad slot number \"x\": expected a decimal number"
    );
    assert_eq!(
        raw.ask("DETACH 99"),
        "ERR bad slot number 99: this VM has 2 disk slots: 0 to 1"
    );
    assert_eq!(
        raw.ask("ATTACH 0"),
        "ERR wrong number of arguments: usage ATTACH <slot> <serial>"
    );
    assert!(raw
        .ask("ATTACH 0 layer")
        .starts_with("ERR missing file descriptor"));
    raw.send_with_fd(b"ATTACH 0 123456789012345678901\n", &image);
    assert_eq!(raw.reply(), "ERR serial longer than 20 bytes (21 bytes)");
    raw.send_with_fd(b"ATTACH 0 l\x7fyer\n", &image);
    assert_eq!(
        raw.reply(),
        "ERR serial \"l\\x7fyer\" is not printable ASCII"
    );
    raw.send_with_fd(b"DETACH 0\n", &image);
    assert_eq!(
        raw.reply(),
        "ERR unexpected file descriptor: DETACH takes none"
    );
    raw.send_with_fd(b"ATTACH 0 s\n", &vm.image("b", 513, 0));
    assert_eq!(
        raw.reply(),
        "ERR slot 0: the image's size, 513 bytes, is not a multiple of 512"
    );
    raw.send_with_fd(b"ATTACH 0 s\n", &File::open(vm.dir.path()).unwrap());
    assert_eq!(
        raw.reply(),
        "ERR slot 0: the image is not a regular file or block device"
    );
    // A long line is refused once, as soon as it is too long; its rest is skipped.
    raw.send(&[b'A'; 300]);
    assert_eq!(raw.reply(), "ERR line too long (more than 256 bytes)");
    raw.send(&[b'B'; 5000]);
    raw.send(b"\n");
    // Binary garbage.
    raw.send(b"\x00\xff\xfe garbage\n");
    assert!(raw
        .reply()
        .starts_with("ERR unknown command \"\\x00\\xff\\xfe\""));
    assert_eq!(vm.generation(0), 0, "nothing reached the slots");
    // The connection still works, pipelined requests included.
    raw.send_with_fd(b"ATTACH 1 ok\n", &image);
    raw.send(b"DETACH 1\nDETACH 1\n");
    assert_eq!(raw.reply(), "OK 1 2");
    assert_eq!(raw.reply(), "OK 1");
    assert_eq!(raw.reply(), "ERR slot 1 is not attached");
}

#[test]
fn extra_descriptors_are_refused_and_closed() {
    let vm = Vm::new();
    let files: Vec<File> = (0..10)
        .map(|i| vm.image(&format!("f{i}"), 512, 0))
        .collect();
    let fds: Vec<i32> = files.iter().map(AsRawFd::as_raw_fd).collect();
    let mut raw = vm.raw();
    raw.stream
        .send_with_fds(&[&b"ATTACH 0 s\n"[..]], &fds[..2])
        .unwrap();
    assert_eq!(
        raw.reply(),
        "ERR more than one file descriptor with one request"
    );
    assert_eq!(
        raw.ask("DETACH 0"),
        "ERR slot 0 is not attached",
        "still connected"
    );
    // More than the server takes at once: the line is lost with them, so the connection ends.
    raw.stream
        .send_with_fds(&[&b"ATTACH 0 s\n"[..]], &fds)
        .unwrap();
    assert_eq!(
        raw.reply(),
        "ERR more than one file descriptor with one request"
    );
    let mut rest = String::new();
    assert_eq!(raw.replies.read_line(&mut rest).unwrap(), 0, "then EOF");
    assert_eq!(vm.generation(0), 0);
    assert!(vm.raw().ask("DETACH 0").starts_with("ERR slot 0"));
}

/// Whether every copy of `end`'s peer has been closed, its own included: `end` then reads EOF.
fn peer_closed(end: &UnixStream) -> bool {
    end.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    matches!(std::io::Read::read(&mut &*end, &mut [0u8; 1]), Ok(0))
}

#[test]
fn refused_descriptors_are_closed() {
    let vm = Vm::new();
    let cases: [(&[u8], usize); 4] = [
        (b"ATTACH 0 two\n", 2),
        (b"ATTACH 0 many\n", 10),
        (b"DETACH 0\n", 1),
        (b"ATTACH 0 socket\n", 1),
    ];
    for (line, count) in cases {
        let (watched, end) = UnixStream::pair().unwrap();
        let mut raw = vm.raw();
        let fds = vec![watched.as_raw_fd(); count];
        raw.stream.send_with_fds(&[line], &fds).unwrap();
        drop(watched);
        assert!(raw.reply().starts_with("ERR "));
        assert!(peer_closed(&end), "{}", String::from_utf8_lossy(line));
    }
    assert_eq!(vm.generation(0), 0);
}

#[test]
fn clients_that_disconnect_mid_line_or_stay_silent_disturb_nothing() {
    let vm = Vm::new();
    let image = vm.image("a", 512, 0);
    let mut half = vm.raw();
    half.send_with_fd(b"ATTACH 0 half", &image);
    drop(half);
    let mut silent = vm.raw();
    // Another client is served while `silent` holds its connection open.
    let mut client = Client::connect(&vm.socket).unwrap();
    assert_eq!(client.attach(0, "whole", &image).unwrap(), 1);
    assert_eq!(vm.serial(0), "whole");
    assert_eq!(vm.generation(0), 1, "the half line did nothing");
    assert_eq!(silent.ask("DETACH 0"), "OK 0");
}

#[test]
fn more_clients_than_allowed_are_turned_away() {
    let vm = Vm::new();
    let mut clients: Vec<Raw> = (0..MAX_CLIENTS).map(|_| vm.raw()).collect();
    // Each is served, so the server has taken them all.
    for client in &mut clients {
        assert!(client.ask("DETACH 0").starts_with("ERR slot 0"));
    }
    let mut extra = vm.raw();
    assert_eq!(extra.reply(), "ERR too many clients (at most 16 at once)");
    drop(clients.pop());
    // The server notices the hang-up on its own time: retry until a new client fits again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut raw = vm.raw();
        // A client turned away may be gone before the request is written.
        let _ = raw.stream.write_all(b"DETACH 0\n");
        let reply = raw.reply();
        if reply.starts_with("ERR slot 0") {
            break;
        }
        assert!(reply.starts_with("ERR too many clients"), "{reply}");
        assert!(
            std::time::Instant::now() < deadline,
            "no room after a client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_socket_replaces_a_stale_one_and_stays_after_the_server() {
    let mut vm = Vm::new();
    assert!(vm.socket.exists());
    drop(vm.server.take());
    // The VMM never removes its socket (no unlink under its seccomp filter): what is left is
    // a stale socket nobody listens on, as a killed VMM leaves too.
    assert!(vm.socket.exists());
    let server = Server::start(&vm.socket, Vec::new()).unwrap();
    assert!(
        matches!(
            Server::start(&vm.socket, Vec::new()),
            Err(rvm_vmm::api::ServerError::InUse(_))
        ),
        "a live socket is not replaced"
    );
    drop(server);
    assert!(vm.socket.exists());
    let again = Server::start(&vm.socket, Vec::new()).unwrap();
    drop(again);
}

/// Runs [`api_child`] in a child process that first installs the VMM's enforced seccomp
/// filter, as `rvm-vmm --seccomp enforce` does before the guest runs.
#[test]
fn the_api_works_under_the_enforced_seccomp_filter() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "api_child", "--nocapture", "--test-threads=1"])
        .env("RVM_API_CHILD_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("API-CHILD-OK"),
        "{output:?}"
    );
}

/// The child's side of the test above; does nothing in a normal test run.
#[test]
fn api_child() {
    let Some(dir) = std::env::var_os("RVM_API_CHILD_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let socket = dir.join("api.sock");
    let image_path = dir.join("image");
    std::fs::write(&image_path, vec![3u8; 4096]).unwrap();
    // Everything opened before the filter, as in the VMM.
    let image = File::open(&image_path).unwrap();
    let block = Block::empty_slot();
    let server = Server::start(&socket, vec![block.slot()]).unwrap();
    // The clients too: the filter forbids making and connecting sockets (the VMM does
    // neither once the guest runs; here the test plays the host as well).
    let mut client = Client::connect(&socket).unwrap();
    let mut raw = Raw::connect(&socket);
    rvm_vmm::seccomp::install(rvm_vmm::seccomp::SeccompMode::Enforce).unwrap();

    assert_eq!(client.attach(0, "under-seccomp", &image).unwrap(), 8);
    assert_eq!(
        refused(client.detach(1)).split(':').next(),
        Some("bad slot number 1")
    );
    raw.send(b"\xffgarbage\n");
    assert!(raw.reply().starts_with("ERR unknown command"));
    raw.send(b"DETACH");
    drop(raw);
    client.detach(0).unwrap();
    drop(server);
    println!("API-CHILD-OK");
}
