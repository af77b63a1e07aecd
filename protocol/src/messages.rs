//! The typed request of each `Agent` RPC, decoded from a ttrpc request's method and payload.
//!
//! ttrpc dispatches by method name on a live connection; this names the same mapping once, for
//! logging, tests and the fuzzer, so that every request message is decoded the way the server
//! decodes it.

use protobuf::Message;
use thiserror::Error;
use ttrpc::proto::Request;

use crate::generated::agent::*;

/// The ttrpc service name of `proto/agent.proto`.
pub const SERVICE: &str = "rvm.agent.v1.Agent";

/// The most data one `ReadStdout`/`ReadStderr` answer or `WriteStdin` request carries: well
/// under the 4 MiB frame limit, so a chunk and its envelope always fit in one frame.
pub const MAX_IO_CHUNK: u32 = 1 << 20;

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("request for service {service:?}, expected {SERVICE:?}")]
    UnknownService { service: String },
    #[error("request for unknown method {method:?} of {SERVICE}")]
    UnknownMethod { method: String },
    #[error("payload of {method} is not a valid {message}: {source}")]
    BadPayload {
        method: &'static str,
        message: &'static str,
        source: protobuf::Error,
    },
}

macro_rules! agent_requests {
    ($($method:ident($message:ident)),+ $(,)?) => {
        /// One decoded request of the `Agent` service, named by its RPC.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AgentRequest {
            $($method($message),)+
        }

        impl AgentRequest {
            /// Every RPC of the service, as ttrpc names them on the wire.
            pub const METHODS: &'static [&'static str] = &[$(stringify!($method),)+];

            /// Decodes `payload` as the request message of `method`.
            pub fn decode(method: &str, payload: &[u8]) -> Result<Self, DecodeError> {
                match method {
                    $(stringify!($method) => $message::parse_from_bytes(payload)
                        .map(Self::$method)
                        .map_err(|source| DecodeError::BadPayload {
                            method: stringify!($method),
                            message: stringify!($message),
                            source,
                        }),)+
                    other => Err(DecodeError::UnknownMethod { method: other.to_owned() }),
                }
            }

            /// The protobuf encoding of the message.
            pub fn encode_payload(&self) -> Result<Vec<u8>, protobuf::Error> {
                match self {
                    $(Self::$method(message) => message.write_to_bytes(),)+
                }
            }

            /// The RPC this request is for.
            pub fn method(&self) -> &'static str {
                match self {
                    $(Self::$method(_) => stringify!($method),)+
                }
            }
        }
    };
}

agent_requests! {
    Version(VersionRequest),
    Ping(PingRequest),
    ConfigureNetwork(ConfigureNetworkRequest),
    CreateContainer(CreateContainerRequest),
    StartContainer(StartContainerRequest),
    Pause(PauseRequest),
    Resume(ResumeRequest),
    RemoveContainer(RemoveContainerRequest),
    ExecProcess(ExecProcessRequest),
    SignalProcess(SignalProcessRequest),
    WaitProcess(WaitProcessRequest),
    ListProcesses(ListProcessesRequest),
    WriteStdin(WriteStdinRequest),
    CloseStdin(CloseStdinRequest),
    ReadStdout(ReadOutputRequest),
    ReadStderr(ReadOutputRequest),
    ResizePty(ResizePtyRequest),
    Stats(StatsRequest),
    UpdateResources(UpdateResourcesRequest),
    UpdateDirectory(UpdateDirectoryRequest),
    Shutdown(ShutdownRequest),
}

/// Decodes a ttrpc request of the `Agent` service into its typed message.
pub fn decode_agent_request(request: &Request) -> Result<AgentRequest, DecodeError> {
    if request.service != SERVICE {
        return Err(DecodeError::UnknownService {
            service: request.service.clone(),
        });
    }
    AgentRequest::decode(&request.method, &request.payload)
}

/// The ttrpc request a client sends for `request`.
pub fn encode_agent_request(request: &AgentRequest) -> Result<Request, protobuf::Error> {
    Ok(Request {
        service: SERVICE.to_owned(),
        method: request.method().to_owned(),
        payload: request.encode_payload()?,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::generated::agent_ttrpc::{create_agent, Agent};

    /// A service answering nothing: only its method table is looked at.
    struct NoAgent;

    impl Agent for NoAgent {}

    #[test]
    fn methods_are_those_of_the_generated_service() {
        let services = create_agent(Arc::new(NoAgent));
        let service = services.get(SERVICE).unwrap();
        let mut generated: Vec<&str> = service.methods.keys().map(String::as_str).collect();
        let mut ours = AgentRequest::METHODS.to_vec();
        generated.sort_unstable();
        ours.sort_unstable();
        assert_eq!(ours, generated);
    }

    #[test]
    fn request_round_trips_through_ttrpc_request() {
        let original = AgentRequest::SignalProcess(SignalProcessRequest {
            container_id: "c1".into(),
            exec_id: "e1".into(),
            signal: 15,
            all: true,
            ..Default::default()
        });
        let request = encode_agent_request(&original).unwrap();
        assert_eq!(request.method, "SignalProcess");
        assert_eq!(decode_agent_request(&request).unwrap(), original);
    }

    #[test]
    fn other_service_is_refused() {
        let request = Request {
            service: "containerd.task.v2.Task".into(),
            method: "Ping".into(),
            ..Default::default()
        };
        assert!(matches!(
            decode_agent_request(&request),
            Err(DecodeError::UnknownService { .. })
        ));
    }

    #[test]
    fn io_chunk_fits_in_a_frame() {
        let request = AgentRequest::WriteStdin(WriteStdinRequest {
            container_id: "c".repeat(64),
            exec_id: "e".repeat(64),
            data: vec![0xff; MAX_IO_CHUNK as usize],
            ..Default::default()
        });
        let frame =
            crate::fuzzing::encode_request_frame(1, &encode_agent_request(&request).unwrap());
        assert!(frame.is_ok());
    }

    #[test]
    fn unknown_method_is_refused() {
        assert!(matches!(
            AgentRequest::decode("Reboot", &[]),
            Err(DecodeError::UnknownMethod { .. })
        ));
    }

    #[test]
    fn bad_payload_names_method_and_message() {
        let error = AgentRequest::decode("WaitProcess", &[0xff]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("WaitProcess"), "{message}");
        assert!(message.contains("WaitProcessRequest"), "{message}");
    }

    #[test]
    fn empty_payload_is_the_default_message() {
        for method in AgentRequest::METHODS {
            let request = AgentRequest::decode(method, &[]).unwrap();
            assert_eq!(request.method(), *method);
        }
    }
}
