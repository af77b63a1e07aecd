//! The host's ttrpc client to the agent: connection over hybrid vsock and the version handshake.
//!
//! Calls take a `ttrpc::context::Context`: `context::with_duration(d)` for ordinary calls, and
//! `context::with_timeout(0)` (no deadline) for the long polls ReadStdout, ReadStderr and
//! WaitProcess.

use std::path::Path;
use std::time::Duration;

use thiserror::Error;
use tokio::net::UnixStream;
use ttrpc::context;
use ttrpc::r#async::transport::Socket;
use ttrpc::r#async::Client;

use crate::generated::agent::VersionResponse;
use crate::generated::agent_ttrpc::AgentClient;
use crate::hybrid_vsock::{self, HybridVsockError};
use crate::ports::AGENT_PORT;
use crate::version::{check_compatible, version_request, ProtocolVersion, VersionError};

#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("Version call to the agent failed: {0}")]
    Rpc(#[from] ttrpc::Error),
    #[error(transparent)]
    Incompatible(#[from] VersionError),
}

/// A ttrpc client of the agent over an already connected stream. Needs a running tokio runtime.
pub fn agent_client(stream: UnixStream) -> AgentClient {
    AgentClient::new(Client::new(Socket::from(stream)))
}

/// Connects to the agent's port through the VMM socket at `uds_path`.
pub async fn connect_agent(
    uds_path: &Path,
    timeout: Duration,
) -> Result<AgentClient, HybridVsockError> {
    let stream = hybrid_vsock::connect(uds_path, AGENT_PORT, timeout).await?;
    Ok(agent_client(stream))
}

/// Calls Version and refuses an agent of another major version.
pub async fn handshake(
    client: &AgentClient,
    host_version: &str,
    timeout: Duration,
) -> Result<VersionResponse, HandshakeError> {
    let request = version_request(host_version);
    let response = client
        .version(context::with_duration(timeout), &request)
        .await?;
    check_compatible(ProtocolVersion::from(&response))?;
    Ok(response)
}
