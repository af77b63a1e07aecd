//! Limits of what the host sends the agent by content (host files and directories a spec
//! bind-mounts) and of what comes back. The host checks them before sending, so it can name
//! the bind mount at fault; the agent checks them again, since it trusts nothing it receives.
//! Both read them from here, so the two checks cannot drift apart.

/// Most bytes of one host file, or of one file of a host directory, sent by content.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Most entries (files, directories and symlinks, at any depth) of one host directory sent by
/// content.
pub const MAX_DIRECTORY_ENTRIES: usize = 4096;

/// Most bytes of a file the agent returns when the container's init exits (kubelet's
/// termination message): kubelet reads the last `MaxContainerTerminationMessageLength`,
/// 4096 bytes, of the file.
pub const MAX_RETURNED_FILE_BYTES: usize = 4096;

/// Most bytes (contents and paths) of all host files and directories of one container: they
/// travel in one CreateContainer request, which must fit in one frame
/// (ttrpc's [`MESSAGE_LENGTH_MAX`](ttrpc::proto::MESSAGE_LENGTH_MAX)) with the spec beside them.
pub const MAX_HOST_CONTENT_BYTES: usize = 3 << 20;

// A file within its own limit always fits the task's content budget.
const _: () = assert!(MAX_FILE_BYTES <= MAX_HOST_CONTENT_BYTES);

// The host content leaves half a MiB of a frame for the spec and the request's envelope.
const _: () = assert!(MAX_HOST_CONTENT_BYTES + (512 << 10) <= ttrpc::proto::MESSAGE_LENGTH_MAX);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_file_fits_the_wire_field() {
        // HostFile.return_max_bytes is a uint32.
        assert!(u32::try_from(MAX_RETURNED_FILE_BYTES).is_ok());
    }
}
