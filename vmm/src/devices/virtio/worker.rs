//! The worker thread of an active virtio device: one epoll set over the device's queue
//! notifiers, its backend's descriptors (a file, a TAP, sockets) and a stop eventfd. Device
//! logic lives in a [`QueueHandler`]; the worker only waits and dispatches, so no device work
//! ever runs on a vCPU thread.

use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::ActivateError;

/// Token of the stop eventfd.
const STOP_TOKEN: u64 = u64::MAX;
/// Tokens below this one are queue indexes; devices use tokens from here on.
pub const FIRST_BACKEND_TOKEN: u64 = 1 << 16;

/// The epoll set of a worker, for handlers to watch their backend descriptors.
#[derive(Debug)]
pub struct Poller {
    epoll: Epoll,
}

impl Poller {
    /// Watches `fd` for `events`, reporting them with `token` (at least [`FIRST_BACKEND_TOKEN`]).
    pub fn add(&self, fd: RawFd, events: EventSet, token: u64) -> std::io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
    }

    /// Changes the events watched on `fd`.
    pub fn modify(&self, fd: RawFd, events: EventSet, token: u64) -> std::io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Modify, fd, EpollEvent::new(events, token))
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: RawFd) -> std::io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }
}

/// The device logic run by a worker thread.
pub trait QueueHandler: Send + 'static {
    /// Called once in the worker thread before the first event: register backend descriptors.
    fn start(&mut self, _poller: &Poller) {}
    /// The guest notified queue `index` (its eventfd has already been drained).
    fn queue_notified(&mut self, poller: &Poller, index: usize);
    /// A backend descriptor registered with `token` is ready with `events`.
    fn backend_event(&mut self, _poller: &Poller, _token: u64, _events: EventSet) {}
}

/// A running worker thread; dropping it stops the thread.
#[derive(Debug)]
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts `handler` on a thread named `vmm-<name>`, woken by the queue `notifiers`.
    pub fn spawn<H: QueueHandler>(
        name: &str,
        mut handler: H,
        notifiers: Vec<EventFd>,
    ) -> std::io::Result<Worker> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let poller = Poller {
            epoll: Epoll::new()?,
        };
        poller.add(stop.as_raw_fd(), EventSet::IN, STOP_TOKEN)?;
        for (index, notifier) in (0u64..).zip(&notifiers) {
            poller.add(notifier.as_raw_fd(), EventSet::IN, index)?;
        }
        let thread_stop = stop.try_clone()?;
        let thread = std::thread::Builder::new()
            .name(format!("vmm-{name}"))
            .spawn(move || {
                handler.start(&poller);
                run(&poller, &mut handler, &notifiers, &thread_stop);
            })?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }

    /// Starts the worker of `device` as it activates; failing to is its activation error.
    pub fn start_device<H: QueueHandler>(
        device: &'static str,
        handler: H,
        notifiers: Vec<EventFd>,
    ) -> Result<Worker, ActivateError> {
        Worker::spawn(device, handler, notifiers)
            .map_err(|source| ActivateError::Worker { device, source })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Err(e) = self.stop.write(1) {
            crate::error_limited!("cannot stop a device worker: {e}");
            return;
        }
        if thread.join().is_err() {
            crate::error_limited!("a device worker thread panicked");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run<H: QueueHandler>(poller: &Poller, handler: &mut H, notifiers: &[EventFd], stop: &EventFd) {
    let mut events = [EpollEvent::default(); 32];
    loop {
        let count = match poller.epoll.wait(-1, &mut events) {
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                crate::error_limited!("device worker: epoll failed, stopping: {e}");
                return;
            }
        };
        for event in &events[..count] {
            match event.data() {
                STOP_TOKEN => {
                    let _ = stop.read();
                    return;
                }
                token if token < FIRST_BACKEND_TOKEN => {
                    let Some(notifier) = usize::try_from(token)
                        .ok()
                        .and_then(|index| notifiers.get(index).map(|n| (index, n)))
                    else {
                        continue;
                    };
                    // The count only wakes us: the queue itself says what is pending.
                    let _ = notifier.1.read();
                    handler.queue_notified(poller, notifier.0);
                }
                token => handler.backend_event(poller, token, event.event_set()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Recorder(mpsc::Sender<usize>);

    impl QueueHandler for Recorder {
        fn queue_notified(&mut self, _: &Poller, index: usize) {
            self.0.send(index).unwrap();
        }
    }

    #[test]
    fn dispatches_notifications_and_stops() {
        let (tx, rx) = mpsc::channel();
        let notifiers = vec![EventFd::new(0).unwrap(), EventFd::new(0).unwrap()];
        let second = notifiers[1].try_clone().unwrap();
        let mut worker = Worker::spawn("test", Recorder(tx), notifiers).unwrap();
        second.write(1).unwrap();
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(),
            1
        );
        worker.stop();
        worker.stop();
        assert!(rx.recv().is_err(), "the handler is dropped with the thread");
    }
}
