//! The connection: a tonic channel over containerd's Unix socket, and one call with a deadline
//! whose failure names the RPC and the gRPC status.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// ExecSync answers carry up to 16 MiB of stdout and as much stderr (the CRI's cap).
const MAX_MESSAGE: usize = 40 << 20;

pub type Client = RuntimeServiceClient<Channel>;

/// Connects to the CRI runtime service on `socket` within `deadline`.
pub async fn connect(socket: &Path, deadline: Duration) -> Result<Client> {
    let path = socket.to_path_buf();
    // The URI is required by tonic but unused: the connector always dials the socket.
    let endpoint = Endpoint::from_static("http://localhost").connect_timeout(deadline);
    let connecting = endpoint.connect_with_connector(service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    }));
    let channel = tokio::time::timeout(deadline, connecting)
        .await
        .map_err(|_| {
            anyhow!(
                "no connection to the CRI socket {} within {} s",
                socket.display(),
                deadline.as_secs()
            )
        })?
        .with_context(|| format!("cannot connect to the CRI socket {}", socket.display()))?;
    Ok(RuntimeServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// Awaits one RPC (`what` names it in errors) for at most `deadline`.
pub async fn call<T>(
    what: &str,
    deadline: Duration,
    rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(deadline, rpc).await {
        Err(_) => Err(anyhow!("{what}: no answer within {} s", deadline.as_secs())),
        Ok(Err(status)) => Err(anyhow!(
            "{what} failed: {:?}: {}",
            status.code(),
            status.message()
        )),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}
