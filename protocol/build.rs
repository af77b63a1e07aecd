//! Generates the protobuf messages and the ttrpc client and server of `proto/agent.proto` into
//! OUT_DIR, with no `protoc` binary: ttrpc-codegen parses the file in pure Rust.

use std::path::PathBuf;
use std::{env, fs, io};

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

const PROTO: &str = "proto/agent.proto";

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed={PROTO}");
    let out_dir = PathBuf::from(
        env::var_os("OUT_DIR").ok_or_else(|| io::Error::other("OUT_DIR is not set"))?,
    );
    Codegen::new()
        .out_dir(&out_dir)
        .input(PROTO)
        .include("proto")
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()?;
    // Our own mod.rs, so that both generated files become modules of `generated`.
    fs::write(
        out_dir.join("mod.rs"),
        "pub mod agent;\npub mod agent_ttrpc;\n",
    )
}
