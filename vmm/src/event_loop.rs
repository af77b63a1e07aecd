//! The VMM's main loop: one epoll set over the events that concern the whole VM (a vCPU
//! stopped, a stop signal arrived); later the virtio devices' events join it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::signal::block_signal;

/// Errors of the event loop.
#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    /// epoll failed.
    #[error("epoll: {0}")]
    Epoll(std::io::Error),
    /// The stop signals could not be set up.
    #[error("cannot set up SIGINT/SIGTERM handling: {0}")]
    Signals(String),
    /// Reading a signal failed.
    #[error("cannot read a stop signal: {0}")]
    ReadSignal(std::io::Error),
}

/// What woke the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// A vCPU thread reported its end.
    VcpuReport,
    /// SIGINT or SIGTERM is pending on the stop-signal fd.
    StopSignal,
    /// The embedding program asked the VM to stop.
    StopRequest,
}

impl Token {
    fn to_data(self) -> u64 {
        match self {
            Token::VcpuReport => 1,
            Token::StopSignal => 2,
            Token::StopRequest => 3,
        }
    }

    fn from_data(data: u64) -> Option<Token> {
        match data {
            1 => Some(Token::VcpuReport),
            2 => Some(Token::StopSignal),
            3 => Some(Token::StopRequest),
            _ => None,
        }
    }
}

/// An epoll set dispatching by [`Token`].
#[derive(Debug)]
pub struct EventLoop {
    epoll: Epoll,
}

impl EventLoop {
    /// An empty loop.
    pub fn new() -> Result<Self, EventLoopError> {
        Ok(EventLoop {
            epoll: Epoll::new().map_err(EventLoopError::Epoll)?,
        })
    }

    /// Watches `fd` for input, reporting it as `token`.
    pub fn add(&self, fd: RawFd, token: Token) -> Result<(), EventLoopError> {
        self.epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token.to_data()),
            )
            .map_err(EventLoopError::Epoll)
    }

    /// Waits up to `timeout_ms` (-1: forever) for events.
    pub fn wait(&self, timeout_ms: i32) -> Result<Vec<Token>, EventLoopError> {
        let mut events = [EpollEvent::default(); 8];
        let count = loop {
            match self.epoll.wait(timeout_ms, &mut events) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(EventLoopError::Epoll(e)),
            }
        };
        Ok(events[..count]
            .iter()
            .filter_map(|e| Token::from_data(e.data()))
            .collect())
    }
}

/// SIGINT and SIGTERM, delivered through a signalfd instead of a handler.
#[derive(Debug)]
pub struct StopSignals {
    fd: OwnedFd,
}

impl StopSignals {
    /// Blocks SIGINT and SIGTERM in the calling thread, and so in every thread it starts later,
    /// and opens a signalfd for them. Call it before starting any thread.
    pub fn new() -> Result<Self, EventLoopError> {
        let signals = [libc::SIGINT, libc::SIGTERM];
        for signal in signals {
            block_signal(signal).map_err(|e| EventLoopError::Signals(e.to_string()))?;
        }
        let set = vmm_sys_util::signal::create_sigset(&signals)
            .map_err(|e| EventLoopError::Signals(e.to_string()))?;
        // SAFETY: `set` is a valid, initialised sigset_t that outlives the call; -1 asks for
        // a new descriptor, whose ownership the return value carries.
        let raw = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if raw < 0 {
            return Err(EventLoopError::Signals(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(StopSignals { fd })
    }

    /// Reads the pending signal's number, if any.
    pub fn read(&self) -> Result<Option<i32>, EventLoopError> {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        // SAFETY: the buffer is valid for writes of its whole length, which is what the
        // kernel writes at most for one signalfd record.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(EventLoopError::ReadSignal(e));
        }
        // ssi_signo is the first u32 of signalfd_siginfo.
        let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
        Ok(i32::try_from(signo).ok())
    }
}

impl AsRawFd for StopSignals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn wakes_on_a_registered_eventfd() {
        let event_loop = EventLoop::new().unwrap();
        let event = EventFd::new(0).unwrap();
        event_loop
            .add(event.as_raw_fd(), Token::VcpuReport)
            .unwrap();
        assert!(event_loop.wait(0).unwrap().is_empty());
        event.write(1).unwrap();
        assert_eq!(event_loop.wait(1000).unwrap(), vec![Token::VcpuReport]);
    }
}
