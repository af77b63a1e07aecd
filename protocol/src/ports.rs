//! The vsock ports of the host↔agent protocol.

/// The guest port the agent's ttrpc server listens on.
pub const AGENT_PORT: u32 = 1024;

/// The ttrpc address the agent binds: any CID (`-1` is `VMADDR_CID_ANY`), port [`AGENT_PORT`].
pub const AGENT_LISTEN_ADDRESS: &str = "vsock://-1:1024";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_uses_agent_port() {
        assert!(AGENT_LISTEN_ADDRESS.ends_with(&format!(":{AGENT_PORT}")));
    }
}
