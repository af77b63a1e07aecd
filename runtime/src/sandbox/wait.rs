//! Blocking until a container's files change or its monitor dies, without polling: an inotify
//! watch on the container directory and a pidfd of the monitor, waited on together with `poll`.
//!
//! Why no change is missed: every state write is [`super::files::write_atomic`], which renames
//! its file into the directory, and every rename into a watched directory queues an
//! `IN_MOVED_TO` event. A waiter sets its watch up *before* it reads the state, so a write that
//! lands after the read is still queued when it blocks. A monitor that dies without writing
//! makes its pidfd readable (the kernel signals a pidfd when the process exits, zombie or not).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use rustix::io::Errno;
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use super::process::ProcessId;

/// An inotify watch on one directory: its entries renamed in or deleted, or itself removed.
#[derive(Debug)]
pub struct DirWatch {
    fd: OwnedFd,
}

impl DirWatch {
    /// Watches `dir`; fails with `NotFound` when it does not exist.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let events = WatchFlags::MOVED_TO
            | WatchFlags::DELETE
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        inotify::add_watch(&fd, dir, events)?;
        Ok(Self { fd })
    }

    /// Reads and forgets every queued event: the waiter re-reads the files instead.
    fn drain(&self) -> std::io::Result<()> {
        let mut buffer = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&self.fd, &mut buffer);
        loop {
            match reader.next() {
                Ok(_) => {}
                Err(Errno::AGAIN) => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// A pidfd of `process` while it is the very process recorded; `None` when it is gone.
pub fn pidfd(process: ProcessId) -> Option<OwnedFd> {
    let pid = i32::try_from(process.pid).ok().and_then(Pid::from_raw)?;
    let fd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
    // Checked after opening: if the pid still has the recorded start time now, the pidfd
    // refers to the recorded process and not to one that reused its pid.
    process.is_alive().then_some(fd)
}

/// Blocks until `watch` has events, `process` (if any) has exited, or `deadline` passes.
/// Returns false when the deadline passed first.
pub fn block(
    watch: &DirWatch,
    process: Option<&OwnedFd>,
    deadline: Option<Instant>,
) -> std::io::Result<bool> {
    let timeout = deadline.map(|deadline| {
        let left = deadline.saturating_duration_since(Instant::now());
        Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        })
    });
    let mut fds = vec![PollFd::new(&watch.fd, PollFlags::IN)];
    if let Some(process) = process {
        fds.push(PollFd::new(process, PollFlags::IN));
    }
    let ready = loop {
        match poll(&mut fds, timeout.as_ref()) {
            Err(Errno::INTR) => continue,
            other => break other?,
        }
    };
    watch.drain()?;
    // Without a timeout, poll returns only with a descriptor ready.
    Ok(ready > 0)
}

/// The instant `timeout` from now (`None`: wait for ever).
pub fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|timeout| Instant::now() + timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn a_rename_into_the_directory_wakes_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let watch = DirWatch::new(dir.path()).unwrap();
        crate::sandbox::files::write_atomic(&dir.path().join("state.json"), b"{}").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        assert!(block(&watch, None, Some(deadline)).unwrap());
    }

    #[test]
    fn nothing_happening_ends_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let watch = DirWatch::new(dir.path()).unwrap();
        assert!(!block(&watch, None, Some(Instant::now())).unwrap());
    }

    #[test]
    fn a_dying_process_wakes_its_pidfd() {
        let dir = tempfile::tempdir().unwrap();
        let watch = DirWatch::new(dir.path()).unwrap();
        let mut child = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
        let fd = pidfd(ProcessId::of(child.id()).unwrap()).unwrap();
        // Closing its stdin ends `cat`; it stays a zombie (not reaped yet), which must count.
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        assert!(block(&watch, Some(&fd), Some(deadline)).unwrap());
        child.wait().unwrap();
    }

    #[test]
    fn a_missing_directory_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let error = DirWatch::new(&dir.path().join("gone")).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    }
}
