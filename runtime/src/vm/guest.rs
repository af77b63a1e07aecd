//! The calls a front end makes on a booted VM to run one container in it ([`Guest`]), behind a
//! trait so that the CLI's monitor can be unit-tested against a fake guest; [`Vm`] is the real
//! one. Booting stays with [`Vm::boot`]; the monitor takes it as a closure for the same reason.

use std::future::Future;

use tokio::net::unix::OwnedReadHalf;
use tokio::task::JoinHandle;

use super::stdio::{self, OutputSink};
use super::{NewContainer, ProcessEnd, Vm, VmError};
use crate::jail::JailInfo;
use crate::sandbox::agent::Started;
use crate::sandbox::log::Stream;

/// A booted VM as the CLI's monitor drives it: create the container, start its init, relay its
/// stdio, wait for it, shut down.
pub trait Guest {
    /// Creates `container` in the VM.
    fn create(&self, container: &NewContainer) -> impl Future<Output = Result<(), VmError>>;

    /// Starts container `id`'s init.
    fn start(&self, id: &str) -> impl Future<Output = Result<Started, VmError>>;

    /// Copies one output stream of `container`'s init into `sink`, in a task of its own.
    fn spawn_output(
        &self,
        container: &str,
        stream: Stream,
        sink: impl OutputSink,
    ) -> JoinHandle<()>;

    /// Relays the attached client's frames (`input`) to `container`'s init, in a task of its own.
    fn spawn_input(&self, container: &str, input: OwnedReadHalf);

    /// Waits for `container`'s process `exec` (`""`: the init) to end.
    fn wait_process(&self, container: &str, exec: &str) -> impl Future<Output = ProcessEnd>;

    /// Ends the VM.
    fn shutdown(&self) -> impl Future<Output = ()>;

    /// The VMM's jail, when there is a VMM.
    fn jail(&self) -> Option<JailInfo>;
}

impl Guest for Vm {
    fn create(&self, container: &NewContainer) -> impl Future<Output = Result<(), VmError>> {
        Vm::create(self, container)
    }

    async fn start(&self, id: &str) -> Result<Started, VmError> {
        self.session().start(id).await.map_err(VmError::from)
    }

    fn spawn_output(
        &self,
        container: &str,
        stream: Stream,
        sink: impl OutputSink,
    ) -> JoinHandle<()> {
        stdio::spawn_output(self.session(), container, "", stream, sink)
    }

    fn spawn_input(&self, container: &str, input: OwnedReadHalf) {
        tokio::spawn(crate::sandbox::monitor::pump_input(
            self.session().clone(),
            container.to_owned(),
            input,
        ));
    }

    fn wait_process(&self, container: &str, exec: &str) -> impl Future<Output = ProcessEnd> {
        Vm::wait_process(self, container, exec)
    }

    fn shutdown(&self) -> impl Future<Output = ()> {
        Vm::shutdown(self)
    }

    fn jail(&self) -> Option<JailInfo> {
        Some(Vm::jail(self).clone())
    }
}
