//! Host↔agent protocol of rvm: the message types shared by both ends (the framing is ttrpc's).
//!
//! The service is `rvm.agent.v1.Agent` of `proto/agent.proto`, spoken with ttrpc (containerd's
//! RPC over a byte stream) on vsock port [`ports::AGENT_PORT`]. The agent serves it with
//! [`generated::agent_ttrpc::create_agent`]; the host calls it with an
//! [`generated::agent_ttrpc::AgentClient`] made by [`client`].
//!
//! It is also the one source of what both ends must agree on beside the messages: the limits of
//! content sent by value ([`limits`]), Docker's exit statuses ([`exit`]), the disk serials
//! ([`serial`]) and the namespaces a pod's containers share ([`namespace`]).

pub mod annotations;
pub mod client;
pub mod exit;
#[doc(hidden)]
pub mod fuzzing;
pub mod generated;
pub mod hybrid_vsock;
pub mod limits;
pub mod messages;
pub mod namespace;
pub mod ports;
pub mod serial;
pub mod version;

pub use generated::agent;
pub use generated::agent_ttrpc;
// Re-exported so the agent and the host build against the versions the generated code needs.
pub use async_trait;
pub use protobuf;
pub use ttrpc;
