//! A real ttrpc server and client of the generated `Agent` service, over an in-process socket pair.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use ttrpc::r#async::transport::Listener;
use ttrpc::r#async::{Server, TtrpcContext};

use rvm_protocol::agent::{
    PingRequest, PingResponse, ReadOutputRequest, ReadOutputResponse, StatsRequest, VersionRequest,
    VersionResponse,
};
use rvm_protocol::agent_ttrpc::{create_agent, Agent, AgentClient};
use rvm_protocol::client::{agent_client, connect_agent, handshake, HandshakeError};
use rvm_protocol::ports::AGENT_PORT;
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

type TestResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Starts a ttrpc server of `agent` on one accepted `connection`. Dropping the server ends it.
async fn serve_connection(agent: TestAgent, connection: UnixStream) -> TestResult<Server> {
    // One connection, then a listener that never yields another nor ends.
    let listener = Listener::new(stream::iter([Ok(connection)]).chain(stream::pending()));
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(create_agent(Arc::new(agent)));
    server.start().await?;
    Ok(server)
}

/// Serves `agent` on one end of a socket pair and returns a client on the other.
async fn serve(agent: TestAgent) -> TestResult<(Server, AgentClient)> {
    let (server_end, client_end) = UnixStream::pair()?;
    let server = serve_connection(agent, server_end).await?;
    Ok((server, agent_client(client_end)))
}

/// Plays the VMM's hybrid vsock on `listener`: takes one `CONNECT 1024` and answers OK, then
/// hands the connection to an agent's ttrpc server.
async fn serve_behind_fake_vmm(agent: TestAgent, listener: UnixListener) -> TestResult<Server> {
    let (mut connection, _) = listener.accept().await?;
    let mut line = Vec::new();
    while line.last() != Some(&b'\n') {
        line.push(connection.read_u8().await?);
    }
    assert_eq!(line, format!("CONNECT {AGENT_PORT}\n").as_bytes());
    connection.write_all(b"OK 1073741824\n").await?;
    serve_connection(agent, connection).await
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

#[tokio::test]
async fn connects_through_hybrid_vsock_and_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let vmm = tokio::spawn(async move {
        serve_behind_fake_vmm(
            TestAgent {
                major: PROTOCOL_MAJOR,
            },
            listener,
        )
        .await
        .map_err(|error| error.to_string())
    });
    let client = connect_agent(&path, TIMEOUT).await.unwrap();
    let response = handshake(&client, "host 2", TIMEOUT).await.unwrap();
    assert_eq!(response.agent_version, "agent for host 2");
    let _server = vmm.await.unwrap().unwrap();
}
