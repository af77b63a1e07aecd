//! OCI spec annotations the host sets and the agent reads (rvm's own, under `org.rvm.`).

/// `unconfined`: the container runs without any seccomp filter (`rvm run --security-opt
/// seccomp=unconfined`); absent, the agent applies the spec's `linux.seccomp` or Docker's
/// default profile. The shim removes every `org.rvm.*` annotation from containerd's specs and
/// sets this one only when its configuration says so (`shim/src/seccomp.rs`).
pub const SECCOMP: &str = "org.rvm.seccomp";
