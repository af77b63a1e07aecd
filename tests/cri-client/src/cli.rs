//! The command line: global options, subcommands, and the parsers of `KEY=VALUE` arguments and
//! of the pod uid derived from a name.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "rvm-cri",
    version,
    about = "A small CRI client: drives containerd's CRI plugin (CRI v1) over its Unix socket"
)]
pub struct Cli {
    /// containerd's gRPC socket, which serves the CRI v1 API.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub socket: PathBuf,
    /// Seconds each call (and the connection) may take.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the runtime's name and version (Version).
    Version,
    /// Run a pod sandbox (RunPodSandbox); prints its id.
    Runp(Runp),
    /// Create a container in a pod (CreateContainer); prints its id.
    ///
    /// CreateContainer needs the pod's sandbox config again. It is rebuilt from
    /// PodSandboxStatus(POD): metadata, labels, annotations and namespace options, and the
    /// hostname and log directory from the verbose info when the runtime reports the original
    /// config there (as containerd does). The container's log path is NAME.log, set only when
    /// the pod has a log directory: containerd then writes the container's output to
    /// LOGDIR/NAME.log. Its namespace options are the pod's, as kubelet sends them.
    Create(Create),
    /// Start a created container (StartContainer).
    Start {
        /// Container id.
        container: String,
    },
    /// Stop a container (StopContainer): SIGTERM, then SIGKILL after the grace period.
    Stop {
        /// Container id.
        container: String,
        /// Seconds between SIGTERM and SIGKILL.
        #[arg(long, default_value_t = 10)]
        grace: u64,
    },
    /// Remove a container (RemoveContainer).
    Rm {
        /// Container id.
        container: String,
    },
    /// Stop a pod sandbox and its containers (StopPodSandbox).
    Stopp {
        /// Pod sandbox id.
        pod: String,
    },
    /// Remove a pod sandbox (RemovePodSandbox).
    Rmp {
        /// Pod sandbox id.
        pod: String,
    },
    /// Run a command in a container and wait for it (ExecSync); exits with its exit code.
    Exec(Exec),
    /// Print a container's status as JSON (ContainerStatus, verbose).
    Inspect {
        /// Container id.
        container: String,
    },
    /// Print a pod sandbox's status as JSON (PodSandboxStatus, verbose).
    Inspectp {
        /// Pod sandbox id.
        pod: String,
    },
    /// List containers as JSON (ListContainers).
    Ps {
        /// Only the containers of this pod sandbox.
        #[arg(long)]
        pod: Option<String>,
    },
    /// List pod sandboxes as JSON (ListPodSandbox).
    Pods,
}

#[derive(Debug, clap::Args)]
pub struct Runp {
    /// The pod's name (metadata.name).
    #[arg(long)]
    pub name: String,
    /// The pod's namespace (metadata.namespace).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The pod's uid (metadata.uid); default: derived from the namespace and name.
    #[arg(long)]
    pub uid: Option<String>,
    /// The runtime handler (a runtime name in containerd's CRI config); default: containerd's
    /// default runtime.
    #[arg(long)]
    pub handler: Option<String>,
    /// The pod's hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// The directory where the runtime writes the containers' logs.
    #[arg(long)]
    pub log_dir: Option<String>,
    /// An annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation", value_parser = parse_key_value)]
    pub annotations: Vec<(String, String)>,
    /// One pid namespace for the pod's containers and its sandbox (Kubernetes'
    /// shareProcessNamespace: namespace_options.pid POD instead of CONTAINER). `create` gives a
    /// container the pod's mode, as kubelet does.
    #[arg(long)]
    pub share_pid: bool,
    /// The pod's resources (linux.resources, what kubelet 1.23+ sends: the sum of the pod's
    /// container limits).
    #[command(flatten)]
    pub resources: PodResources,
}

/// `linux.resources` of a pod sandbox; none sent when no field is given.
#[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args)]
pub struct PodResources {
    /// The pod's memory limit in bytes (memory_limit_in_bytes).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(i64).range(1..))]
    pub memory_limit: Option<i64>,
    /// The pod's CFS quota in µs per period (cpu_quota).
    #[arg(long, value_name = "MICROSECONDS", value_parser = clap::value_parser!(i64).range(1..))]
    pub cpu_quota: Option<i64>,
    /// The CFS period in µs (cpu_period); with --cpu-quota, default 100000, as kubelet sends.
    #[arg(long, value_name = "MICROSECONDS", value_parser = clap::value_parser!(i64).range(1..))]
    pub cpu_period: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct Create {
    /// The pod sandbox to create the container in.
    #[arg(long)]
    pub pod: String,
    /// The container's name (metadata.name).
    #[arg(long)]
    pub name: String,
    /// The image, by name (it must be in the runtime's image store).
    #[arg(long)]
    pub image: String,
    /// An environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_key_value)]
    pub envs: Vec<(String, String)>,
    /// The working directory of the container's process.
    #[arg(long)]
    pub workdir: Option<String>,
    /// An annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation", value_parser = parse_key_value)]
    pub annotations: Vec<(String, String)>,
    /// A host path bound into the container, HOST:CONTAINER[:ro] (repeatable), as kubelet
    /// passes its volumes.
    #[arg(long = "mount", value_parser = parse_mount)]
    pub mounts: Vec<MountArg>,
    /// A capability added to the runtime's default set, e.g. NET_ADMIN (repeatable).
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// The command and its arguments (the image's entrypoint and Cmd when none).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// One `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountArg {
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
}

/// Parses `HOST:CONTAINER[:ro]`, both absolute paths.
pub fn parse_mount(text: &str) -> Result<MountArg, String> {
    let (paths, read_only) = match text.strip_suffix(":ro") {
        Some(paths) => (paths, true),
        None => (text, false),
    };
    let Some((host, container)) = paths.split_once(':') else {
        return Err(format!(
            "'{text}' is not HOST:CONTAINER[:ro] (no ':' between the paths)"
        ));
    };
    if !host.starts_with('/') || !container.starts_with('/') || container.contains(':') {
        return Err(format!(
            "'{text}' is not HOST:CONTAINER[:ro] with two absolute paths"
        ));
    }
    Ok(MountArg {
        host_path: host.to_string(),
        container_path: container.to_string(),
        read_only,
    })
}

#[derive(Debug, clap::Args)]
pub struct Exec {
    /// Container id.
    pub container: String,
    /// Seconds the command may run (0: no limit); the call's own deadline grows to match.
    #[arg(long = "timeout", default_value_t = 0)]
    pub exec_timeout: u64,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

/// Parses `KEY=VALUE` (the value may contain `=` and be empty; the key may not be empty).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        Some(_) => Err(format!("'{text}' has an empty key (expected KEY=VALUE)")),
        None => Err(format!("'{text}' has no '=' (expected KEY=VALUE)")),
    }
}

/// A stable pod uid for a namespace and name: the same pod name gets the same uid on every run,
/// as a controller's would for one pod object. FNV-1a (64-bit) of `namespace/name`, in hex.
pub fn derive_uid(namespace: &str, name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in namespace.bytes().chain([b'/']).chain(name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("rvm-cri-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".to_string(), "b=c".to_string())
        );
        assert_eq!(
            parse_key_value("empty=").unwrap(),
            ("empty".to_string(), String::new())
        );
    }

    #[test]
    fn key_value_without_equals_or_key_is_refused() {
        assert!(parse_key_value("novalue").unwrap_err().contains("no '='"));
        assert!(parse_key_value("=v").unwrap_err().contains("empty key"));
    }

    #[test]
    fn derived_uid_is_stable_and_depends_on_namespace_and_name() {
        let uid = derive_uid("default", "p1");
        assert_eq!(uid, derive_uid("default", "p1"));
        assert_ne!(uid, derive_uid("default", "p2"));
        assert_ne!(uid, derive_uid("other", "p1"));
        // "a/bc" and "ab/c" must differ: the separator is hashed too.
        assert_ne!(derive_uid("a", "bc"), derive_uid("ab", "c"));
        assert!(uid.starts_with("rvm-cri-") && uid.len() == "rvm-cri-".len() + 16);
    }

    #[test]
    fn command_line_parses() {
        let cli = Cli::try_parse_from([
            "rvm-cri",
            "--socket",
            "/tmp/s.sock",
            "create",
            "--pod",
            "p",
            "--name",
            "c1",
            "--image",
            "busybox",
            "--env",
            "A=1",
            "--mount",
            "/var/lib/x:/etc/x:ro",
            "--mount",
            "/tmp/cache:/cache",
            "--",
            "sh",
            "-c",
            "echo --name",
        ])
        .unwrap();
        assert_eq!(cli.timeout, 120);
        let Command::Create(create) = cli.command else {
            panic!("not create: {:?}", cli.command);
        };
        assert_eq!(create.envs, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(create.command, ["sh", "-c", "echo --name"]);
        assert_eq!(
            create.mounts,
            [
                MountArg {
                    host_path: "/var/lib/x".into(),
                    container_path: "/etc/x".into(),
                    read_only: true
                },
                MountArg {
                    host_path: "/tmp/cache".into(),
                    container_path: "/cache".into(),
                    read_only: false
                }
            ]
        );
        for bad in ["/a", "a:/b", "/a:b", "/a:/b:/c", "/a:/b:rw"] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }

        let cli =
            Cli::try_parse_from(["rvm-cri", "exec", "c1", "--timeout", "5", "--", "ls"]).unwrap();
        let Command::Exec(exec) = cli.command else {
            panic!("not exec: {:?}", cli.command);
        };
        assert_eq!(
            (exec.exec_timeout, exec.command),
            (5, vec!["ls".to_string()])
        );
        assert!(Cli::try_parse_from(["rvm-cri", "exec", "c1"]).is_err());
    }

    #[test]
    fn runp_takes_the_pods_resources() {
        let runp = |extra: &[&str]| {
            let mut argv = vec!["rvm-cri", "runp", "--name", "p1"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Runp(runp) => runp.resources,
                other => panic!("not runp: {other:?}"),
            })
        };
        assert_eq!(runp(&[]).unwrap(), PodResources::default());
        let share_pid = |extra: &[&str]| {
            let mut argv = vec!["rvm-cri", "runp", "--name", "p1"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Runp(runp) => runp.share_pid,
                other => panic!("not runp: {other:?}"),
            }
        };
        assert!(!share_pid(&[]));
        assert!(share_pid(&["--share-pid"]));
        let resources = runp(&["--memory-limit", "268435456", "--cpu-quota", "200000"]).unwrap();
        assert_eq!(
            resources,
            PodResources {
                memory_limit: Some(256 << 20),
                cpu_quota: Some(200_000),
                cpu_period: None,
            }
        );
        assert!(runp(&["--memory-limit", "0"]).is_err());
        assert!(runp(&["--cpu-quota", "lots"]).is_err());
    }
}
