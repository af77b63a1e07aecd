//! Publishing task events to containerd (TaskCreate, TaskStart, TaskExit, ...).

use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::ttrpc::context;

/// Sends events to containerd on behalf of one namespace.
pub struct Events {
    publisher: RemotePublisher,
    namespace: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("address", &self.publisher.address)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: String) -> Self {
        Self {
            publisher,
            namespace,
        }
    }

    /// Publishes `event` on `topic`; a failure is logged, as containerd retries nothing.
    pub async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(err) = self
            .publisher
            .publish(context::Context::default(), topic, &self.namespace, event)
            .await
        {
            tracing::warn!(topic, %err, "cannot publish event");
        }
    }
}
