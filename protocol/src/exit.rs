//! Docker's exit statuses for a container command that never ran or whose runtime failed. The
//! agent reports them as the exit status of a command it could not execute; the host reports
//! them as `rvm`'s own exit status, as `docker run` and `docker exec` do.

/// The runtime itself failed (not the container's command).
pub const RUNTIME_ERROR: i32 = 125;

/// The command was found but cannot be invoked (not executable, a directory, ...).
pub const CANNOT_INVOKE: i32 = 126;

/// The command was not found (as a shell reports it).
pub const NOT_FOUND: i32 = 127;
