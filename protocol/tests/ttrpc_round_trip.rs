//! A real ttrpc server and client of the generated `Agent` service, over an in-process socket pair.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use tokio::net::UnixStream;
use ttrpc::r#async::transport::Listener;
use ttrpc::r#async::{Server, TtrpcContext};

use rvm_protocol::agent::{
    PingRequest, PingResponse, ReadOutputRequest, ReadOutputResponse, StatsRequest, VersionRequest,
    VersionResponse,
};
use rvm_protocol::agent_ttrpc::{create_agent, Agent, AgentClient};
use rvm_protocol::client::{agent_client, handshake, HandshakeError};
use rvm_protocol::version::{self, PROTOCOL_MAJOR};

const TIMEOUT: Duration = Duration::from_secs(5);

/// An agent answering Version with `major`, Ping, and ReadStdout with one chunk then EOF.
struct TestAgent {
    major: u32,
}

#[rvm_protocol::async_trait::async_trait]
impl Agent for TestAgent {
    async fn version(
        &self,
        _ctx: &TtrpcContext,
        request: VersionRequest,
    ) -> ttrpc::Result<VersionResponse> {
        let mut response =
            version::version_response(&format!("agent for {}", request.host_version));
        response.protocol_major = self.major;
        Ok(response)
    }

    async fn ping(&self, _ctx: &TtrpcContext, _: PingRequest) -> ttrpc::Result<PingResponse> {
        Ok(PingResponse::default())
    }

    async fn read_stdout(
        &self,
        _ctx: &TtrpcContext,
        request: ReadOutputRequest,
    ) -> ttrpc::Result<ReadOutputResponse> {
        let eof = request.exec_id == "done";
        let data = if eof { Vec::new() } else { b"hello\n".to_vec() };
        Ok(ReadOutputResponse {
            data,
            eof,
            ..Default::default()
        })
    }
}

/// Serves `agent` on one end of a socket pair and returns a client on the other. The server is
/// returned too: dropping it would end the connection.
async fn serve(agent: TestAgent) -> Result<(Server, AgentClient), Box<dyn std::error::Error>> {
    let (server_end, client_end) = UnixStream::pair()?;
    // One connection, then a listener that never yields another nor ends.
    let listener = Listener::new(stream::iter([Ok(server_end)]).chain(stream::pending()));
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(create_agent(Arc::new(agent)));
    server.start().await?;
    Ok((server, agent_client(client_end)))
}

#[tokio::test]
async fn version_handshake_accepts_same_major() {
    let (_server, client) = serve(TestAgent {
        major: PROTOCOL_MAJOR,
    })
    .await
    .unwrap();
    let response = handshake(&client, "host 1", TIMEOUT).await.unwrap();
    assert_eq!(response.protocol_major, PROTOCOL_MAJOR);
    assert_eq!(response.agent_version, "agent for host 1");
}

#[tokio::test]
async fn version_handshake_refuses_other_major() {
    let (_server, client) = serve(TestAgent {
        major: PROTOCOL_MAJOR + 1,
    })
    .await
    .unwrap();
    let error = handshake(&client, "host 1", TIMEOUT).await.unwrap_err();
    assert!(matches!(error, HandshakeError::Incompatible(_)), "{error}");
}

#[tokio::test]
async fn ping_answers() {
    let (_server, client) = serve(TestAgent {
        major: PROTOCOL_MAJOR,
    })
    .await
    .unwrap();
    let response = client
        .ping(
            ttrpc::context::with_duration(TIMEOUT),
            &PingRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(response, PingResponse::default());
}

#[tokio::test]
async fn read_stdout_returns_data_then_eof() {
    let (_server, client) = serve(TestAgent {
        major: PROTOCOL_MAJOR,
    })
    .await
    .unwrap();
    let read = |exec_id: &str| ReadOutputRequest {
        container_id: "c1".into(),
        exec_id: exec_id.into(),
        max_bytes: 4096,
        ..Default::default()
    };
    let context = || ttrpc::context::with_duration(TIMEOUT);
    let chunk = client.read_stdout(context(), &read("e1")).await.unwrap();
    assert_eq!((chunk.data.as_slice(), chunk.eof), (&b"hello\n"[..], false));
    let end = client.read_stdout(context(), &read("done")).await.unwrap();
    assert_eq!((end.data.as_slice(), end.eof), (&b""[..], true));
}

#[tokio::test]
async fn unimplemented_rpc_is_an_error_status() {
    let (_server, client) = serve(TestAgent {
        major: PROTOCOL_MAJOR,
    })
    .await
    .unwrap();
    let error = client
        .stats(
            ttrpc::context::with_duration(TIMEOUT),
            &StatsRequest::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ttrpc::Error::RpcStatus(_)), "{error:?}");
}
