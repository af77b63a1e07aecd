//! Host↔agent protocol of rvm: message types and framing shared by both ends.
//!
//! The service is `rvm.agent.v1.Agent` of `proto/agent.proto`, spoken with ttrpc (containerd's
//! RPC over a byte stream) on vsock port [`ports::AGENT_PORT`]. The agent serves it with
//! [`generated::agent_ttrpc::create_agent`]; the host calls it with an
//! [`generated::agent_ttrpc::AgentClient`] made by [`client`].

pub mod annotations;
pub mod client;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod generated;
pub mod hybrid_vsock;
pub mod messages;
pub mod ports;
pub mod version;

pub use generated::agent;
pub use generated::agent_ttrpc;
// Re-exported so the agent and the host build against the versions the generated code needs.
pub use async_trait;
pub use protobuf;
pub use ttrpc;
