//! rvm-agent: the guest's PID 1 (kernel filesystems, reaping, power) and the in-guest container
//! engine, served to the host over ttrpc.
//!
//! What the host relies on:
//! - The agent listens on vsock port 1024 (`rvm_protocol::ports`) once it logs "agent ready".
//! - Disks are found by their virtio-blk serial (`/sys/block/vd*/serial`): each
//!   `CreateContainerRequest.layers[i].serial` names an erofs layer disk (mounted read-only once
//!   per VM at /run/rvm/layers/SERIAL and shared), `scratch_disk_serial` the ext4 scratch disk
//!   (mounted at /run/rvm/scratch/SERIAL; each container gets SERIAL/ID/{upper,work}). Serials
//!   are 1-20 characters (virtio-blk's limit) of letters, digits, '-', '_', '.'.
//! - Without layer disks, the spec's `root.path` (absolute, on the agent's machine) is the rootfs
//!   as is: that is how native tests run containers without a VM.
//! - The user: `process.user.username` holds Docker's `-u` string ("name", "uid", "uid:gid",
//!   "name:group") resolved in the image's /etc/passwd and /etc/group; without it the numeric
//!   uid/gid are used, plus the supplementary groups /etc/group lists for that user.
//! - Capabilities: the spec's `process.capabilities`, or Docker's default set when absent.
//! - Seccomp: the spec's `linux.seccomp` profile (x86_64 only; SCMP_ACT_NOTIFY is refused),
//!   else Docker's default profile; none when the annotation `org.rvm.seccomp` is `unconfined`.
//!   A profile that cannot be compiled fails CreateContainer with INVALID_ARGUMENT.
//! - A command that cannot be executed: StartContainer/ExecProcess succeed with `exec_failure`
//!   set (127 not found, 126 not invocable, with Docker's message); WaitProcess then reports the
//!   same status.
//! - Shutdown syncs, answers, then reboots (reboot=k ends the VM). `shutdown_on_exit` in
//!   CreateContainer ends the VM once every container has exited and the host has read each
//!   init's stdout and stderr to their end and its WaitProcess.

pub mod disks;
pub mod engine;
pub mod helper;
pub mod init;
pub mod netconfig;
pub mod reaper;
pub mod server;
