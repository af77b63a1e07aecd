//! Finding and executing the container's command, with Docker's statuses and messages when it
//! cannot be run: 127 when it is not found, 126 when it cannot be invoked.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use rvm_protocol::exit;
use serde::{Deserialize, Serialize};

/// The PATH Docker uses when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the command could not be started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecFailure {
    /// [`exit::NOT_FOUND`] or [`exit::CANNOT_INVOKE`].
    pub status: i32,
    /// Docker's wording, e.g. `exec: "nosuch": executable file not found in $PATH`.
    pub message: String,
}

impl ExecFailure {
    fn not_found(message: String) -> Self {
        Self {
            status: exit::NOT_FOUND,
            message,
        }
    }

    fn not_executable(message: String) -> Self {
        Self {
            status: exit::CANNOT_INVOKE,
            message,
        }
    }
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves `program` as `execvp` would, with `path_var` (the process's PATH) or the default.
pub fn resolve(program: &str, path_var: Option<&str>) -> Result<PathBuf, ExecFailure> {
    if program.is_empty() {
        return Err(ExecFailure::not_found(
            "exec: \"\": executable file not found in $PATH".to_owned(),
        ));
    }
    if program.contains('/') {
        let path = PathBuf::from(program);
        return match path.metadata() {
            Err(_) => Err(ExecFailure::not_found(format!(
                "exec: \"{program}\": stat {program}: no such file or directory"
            ))),
            Ok(m) if m.is_dir() => Err(ExecFailure::not_executable(format!(
                "exec: \"{program}\": is a directory"
            ))),
            Ok(_) => Ok(path),
        };
    }
    let search = path_var.unwrap_or(DEFAULT_PATH);
    for dir in search.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(ExecFailure::not_found(format!(
        "exec: \"{program}\": executable file not found in $PATH"
    )))
}

/// The failure to report when execve of `program` returned `errno`.
pub fn failure_of(program: &str, errno: Errno) -> ExecFailure {
    let message = format!("exec: \"{program}\": {}", errno.desc().to_lowercase());
    match errno {
        Errno::ENOENT => ExecFailure::not_found(message),
        _ => ExecFailure::not_executable(message),
    }
}

/// The command to execute, prepared before anything irreversible so that exec itself does not
/// allocate.
#[derive(Debug)]
pub struct Command {
    pub program: String,
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

fn cstring(text: &[u8]) -> Option<CString> {
    CString::new(text).ok()
}

impl Command {
    /// Resolves `args[0]` with the PATH of `env`.
    pub fn prepare(args: &[String], env: &[String]) -> Result<Self, ExecFailure> {
        let program = args.first().cloned().unwrap_or_default();
        let path_var = env.iter().find_map(|e| e.strip_prefix("PATH="));
        let path = resolve(&program, path_var)?;
        let invalid = || {
            ExecFailure::not_executable(format!(
                "exec: \"{program}\": argument or environment holds a NUL byte"
            ))
        };
        Ok(Self {
            path: cstring(path.as_os_str().as_bytes()).ok_or_else(invalid)?,
            argv: args
                .iter()
                .map(|a| cstring(a.as_bytes()))
                .collect::<Option<_>>()
                .ok_or_else(invalid)?,
            envp: env
                .iter()
                .map(|e| cstring(e.as_bytes()))
                .collect::<Option<_>>()
                .ok_or_else(invalid)?,
            program,
        })
    }

    /// Replaces this process with the command; returns only on failure.
    pub fn exec(&self) -> ExecFailure {
        match nix::unistd::execve(&self.path, &self.argv, &self.envp) {
            Err(errno) => failure_of(&self.program, errno),
            Ok(never) => match never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_on_the_default_path() {
        assert!(resolve("sh", None).unwrap().ends_with("sh"));
    }

    #[test]
    fn missing_command_is_127_with_dockers_message() {
        let failure = resolve("nosuchcmd", Some("/bin:/usr/bin")).unwrap_err();
        assert_eq!(failure.status, exit::NOT_FOUND);
        assert_eq!(
            failure.message,
            "exec: \"nosuchcmd\": executable file not found in $PATH"
        );
        assert_eq!(
            resolve("/no/such", None).unwrap_err().status,
            exit::NOT_FOUND
        );
    }

    #[test]
    fn directory_and_denied_are_126() {
        assert_eq!(
            resolve("/tmp", None).unwrap_err().status,
            exit::CANNOT_INVOKE
        );
        assert_eq!(
            failure_of("/etc/passwd", Errno::EACCES).status,
            exit::CANNOT_INVOKE
        );
        assert_eq!(
            failure_of("/etc/passwd", Errno::EACCES).message,
            "exec: \"/etc/passwd\": permission denied"
        );
    }
}
