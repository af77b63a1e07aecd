//! The OCI runtime spec the agent receives: the image's defaults (Entrypoint, Cmd, Env,
//! WorkingDir, User) combined with the `rvm run` options as Docker combines them, plus Docker's
//! defaults for capabilities, mounts, masked paths, namespaces and rlimits, and what
//! `--privileged` changes in them (inside the container's own VM).

use std::collections::HashMap;

use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use thiserror::Error;

use super::env;
use super::security::Security;
use super::units::{Cpus, CPU_PERIOD};
use crate::image::ImageConfig;

/// The PATH Docker gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("No command specified")]
    NoCommand,
    #[error("the working directory '{0}' is invalid, it needs to be an absolute path")]
    RelativeWorkdir(String),
    #[error("invalid user {0:?}: expected name, uid, name:group or uid:gid")]
    BadUser(String),
    #[error("cannot build the OCI runtime spec: {0}")]
    Build(String),
}

/// The `rvm run` options that shape the spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSpec {
    /// `--entrypoint`: `Some("")` clears the image's entrypoint.
    pub entrypoint: Option<String>,
    /// The command after the image name.
    pub cmd: Vec<String>,
    /// `-e`/`--env-file`, already resolved to `KEY=VALUE`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: String,
    pub read_only: bool,
    pub tty: bool,
    /// `--memory` in bytes.
    pub memory: Option<u64>,
    pub cpus: Option<Cpus>,
    /// `--cap-add`, `--cap-drop`, `--security-opt`.
    pub security: Security,
}

/// The process arguments: Docker's rules for ENTRYPOINT and CMD.
///
/// `--entrypoint` replaces the image's entrypoint and drops the image's CMD; a command given on
/// the command line replaces the image's CMD.
pub fn process_args(image: &ImageConfig, run: &RunSpec) -> Result<Vec<String>, SpecError> {
    let (entrypoint, default_cmd) = match &run.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let cmd = if run.cmd.is_empty() {
        default_cmd
    } else {
        run.cmd.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// The environment: PATH if the image has none, HOSTNAME, TERM with a tty, then the image's
/// variables, then the user's, later ones replacing earlier ones of the same name.
pub fn process_env(image: &ImageConfig, run: &RunSpec) -> Vec<String> {
    let mut base = Vec::new();
    if !env::has(&image.env, "PATH") {
        base.push(DEFAULT_PATH.to_owned());
    }
    base.push(format!("HOSTNAME={}", run.hostname));
    if run.tty {
        base.push("TERM=xterm".to_owned());
    }
    let with_image = env::merge(&base, &image.env);
    env::merge(&with_image, &run.env)
}

/// A user as the spec carries it: numbers, or a name left for the agent to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecUser {
    Ids {
        uid: u32,
        gid: u32,
    },
    /// Some part is a name: the raw `user[:group]`, in [`USER_ANNOTATION`].
    Named(String),
}

/// Parses `-u` / the image's USER (`uid`, `uid:gid`, `name`, `name:group`, ...). A bare uid
/// gets gid 0 here; the agent applies the user's primary group from `/etc/passwd` when it
/// resolves names.
pub fn parse_user(text: &str) -> Result<SpecUser, SpecError> {
    let bad = || SpecError::BadUser(text.to_owned());
    let (user, group) = match text.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (text, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) || text.matches(':').count() > 1 {
        return Err(bad());
    }
    match (user.parse::<u32>(), group.map(str::parse::<u32>)) {
        (Ok(uid), Some(Ok(gid))) => Ok(SpecUser::Ids { uid, gid }),
        _ if text.contains(char::is_whitespace) => Err(bad()),
        _ => Ok(SpecUser::Named(text.to_owned())),
    }
}

use super::security::default_capabilities;

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build()
        .map_err(build_err)
}

fn build_err(err: impl std::fmt::Display) -> SpecError {
    SpecError::Build(err.to_string())
}

/// The mounts Docker (through containerd's defaults) gives every container.
pub fn default_mounts() -> Result<Vec<Mount>, SpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    ])
}

/// `--privileged`'s mounts: Docker's, with /sys read-write.
fn privileged_mounts() -> Result<Vec<Mount>, SpecError> {
    let mut mounts = default_mounts()?;
    for mount in &mut mounts {
        if mount.destination() == std::path::Path::new("/sys") {
            let options = mount.options().clone().unwrap_or_default();
            mount.set_options(Some(options.into_iter().filter(|o| o != "ro").collect()));
        }
    }
    Ok(mounts)
}

/// `--privileged`'s device rule: every device, read, write and mknod. The agent then copies
/// every device node of the VM into the container's /dev.
fn allow_all_devices() -> Result<LinuxDeviceCgroup, SpecError> {
    LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::A)
        .access("rwm")
        .build()
        .map_err(build_err)
}

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The process object: args, env, cwd, user, terminal, capabilities, rlimits. Shared by `run`
/// (the init process) and `exec`.
pub fn build_process(
    args: Vec<String>,
    env: Vec<String>,
    cwd: &str,
    user: &SpecUser,
    tty: bool,
) -> Result<Process, SpecError> {
    let (uid, gid) = match user {
        SpecUser::Ids { uid, gid } => (*uid, *gid),
        SpecUser::Named(_) => (0, 0),
    };
    let rlimit: PosixRlimit = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .hard(1_048_576u64)
        .soft(1_048_576u64)
        .build()
        .map_err(build_err)?;
    let mut builder = ProcessBuilder::default()
        .terminal(tty)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .map_err(build_err)?,
        )
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(default_capabilities())
        .rlimits(vec![rlimit])
        .no_new_privileges(false);
    if let SpecUser::Named(name) = user {
        // The username field is Windows-only in the OCI spec; rvm's agent reads it on Linux.
        builder = builder.user(
            UserBuilder::default()
                .username(name.clone())
                .build()
                .map_err(build_err)?,
        );
    }
    builder.build().map_err(build_err)
}

/// Builds the container's spec from the image config and the run options.
pub fn build_spec(image: &ImageConfig, run: &RunSpec) -> Result<Spec, SpecError> {
    let args = process_args(image, run)?;
    let cwd = match run.workdir.as_deref().or(image.working_dir.as_deref()) {
        Some(dir) if !dir.starts_with('/') => {
            return Err(SpecError::RelativeWorkdir(dir.to_owned()))
        }
        Some(dir) => dir.to_owned(),
        None => "/".to_owned(),
    };
    let user = match run.user.as_deref().or(image.user.as_deref()) {
        Some(text) => parse_user(text)?,
        None => SpecUser::Ids { uid: 0, gid: 0 },
    };
    let mut process = build_process(args, process_env(image, run), &cwd, &user, run.tty)?;
    process.set_capabilities(Some(run.security.linux_capabilities()));
    process.set_no_new_privileges(Some(run.security.no_new_privileges));

    let privileged = run.security.privileged;
    let mut resources = LinuxResourcesBuilder::default();
    if privileged {
        resources = resources.devices(vec![allow_all_devices()?]);
    }
    if let Some(limit) = run.memory {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .map_err(build_err)?,
        );
    }
    if let Some(cpus) = run.cpus {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(cpus.quota())
                .period(CPU_PERIOD)
                .build()
                .map_err(build_err)?,
        );
    }
    // The container shares the VM's network namespace: the VM is its network sandbox.
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| {
        LinuxNamespaceBuilder::default()
            .typ(typ)
            .build()
            .map_err(build_err)
    })
    .collect::<Result<Vec<_>, _>>()?;
    // A privileged container sees everything of its VM, as Docker's sees its host.
    let paths = |paths: &[&str]| -> Vec<String> {
        if privileged {
            Vec::new()
        } else {
            paths.iter().map(|p| (*p).to_owned()).collect()
        }
    };
    let linux = LinuxBuilder::default()
        .resources(resources.build().map_err(build_err)?)
        .namespaces(namespaces)
        .masked_paths(paths(MASKED_PATHS))
        .readonly_paths(paths(READONLY_PATHS))
        .build()
        .map_err(build_err)?;

    let mut annotations: HashMap<String, String> = HashMap::new();
    if run.security.seccomp_off() {
        annotations.insert(
            rvm_protocol::annotations::SECCOMP.to_owned(),
            "unconfined".to_owned(),
        );
    }
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(run.read_only)
                .build()
                .map_err(build_err)?,
        )
        .process(process)
        .hostname(run.hostname.clone())
        .mounts(if privileged {
            privileged_mounts()?
        } else {
            default_mounts()?
        })
        .linux(linux)
        .annotations(annotations)
        .build()
        .map_err(build_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.iter().map(|s| (*s).to_owned()).collect(),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            ..ImageConfig::default()
        }
    }

    fn run(entrypoint: Option<&str>, cmd: &[&str]) -> RunSpec {
        RunSpec {
            entrypoint: entrypoint.map(str::to_owned),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            hostname: "h".into(),
            ..RunSpec::default()
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_combine_as_in_docker() {
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            Option<&'a str>,
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            // image entrypoint, image cmd, --entrypoint, run cmd, expected
            (&[], &["sh"], None, &[], &["sh"]),
            (&[], &["sh"], None, &["echo", "hi"], &["echo", "hi"]),
            (&["/entry"], &["--flag"], None, &[], &["/entry", "--flag"]),
            (&["/entry"], &["--flag"], None, &["x"], &["/entry", "x"]),
            (&["/entry"], &["--flag"], Some("/other"), &[], &["/other"]),
            (
                &["/entry"],
                &["--flag"],
                Some("/other"),
                &["y"],
                &["/other", "y"],
            ),
            (&["/entry"], &["--flag"], Some(""), &["ls"], &["ls"]),
        ];
        for (ie, ic, e, c, expected) in cases {
            let args = process_args(&image(ie, ic), &run(*e, c)).unwrap();
            assert_eq!(args, strings(expected), "{ie:?} {ic:?} {e:?} {c:?}");
        }
    }

    #[test]
    fn nothing_to_run_is_refused() {
        assert_eq!(
            process_args(&image(&[], &[]), &run(None, &[])),
            Err(SpecError::NoCommand)
        );
        assert_eq!(
            process_args(&image(&["/e"], &["c"]), &run(Some(""), &[])),
            Err(SpecError::NoCommand)
        );
    }

    #[test]
    fn env_layers_defaults_image_and_user() {
        let mut img = image(&[], &["sh"]);
        img.env = strings(&["PATH=/image/bin", "A=image", "B=image"]);
        let mut options = run(None, &[]);
        options.env = strings(&["B=user", "C=user"]);
        options.tty = true;
        let env = process_env(&img, &options);
        assert_eq!(
            env,
            strings(&[
                "HOSTNAME=h",
                "TERM=xterm",
                "PATH=/image/bin",
                "A=image",
                "B=user",
                "C=user"
            ])
        );
        let env = process_env(&image(&[], &["sh"]), &run(None, &[]));
        assert_eq!(env, strings(&[DEFAULT_PATH, "HOSTNAME=h"]));
    }

    #[test]
    fn users_numeric_and_named() {
        assert_eq!(parse_user("0"), Ok(SpecUser::Named("0".into())));
        assert_eq!(parse_user("0:0"), Ok(SpecUser::Ids { uid: 0, gid: 0 }));
        assert_eq!(
            parse_user("1000:100"),
            Ok(SpecUser::Ids {
                uid: 1000,
                gid: 100
            })
        );
        assert_eq!(parse_user("nobody"), Ok(SpecUser::Named("nobody".into())));
        assert_eq!(
            parse_user("1000:staff"),
            Ok(SpecUser::Named("1000:staff".into()))
        );
        for bad in ["", ":1", "1:", "a:b:c", "with space"] {
            assert!(parse_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spec_carries_options() {
        let mut img = image(&[], &["sh"]);
        img.working_dir = Some("/srv".into());
        img.user = Some("nobody".into());
        let mut options = run(None, &["echo", "hi"]);
        options.read_only = true;
        options.memory = Some(64 << 20);
        options.cpus = Some(Cpus::parse("1.5", 4).unwrap());
        let spec = build_spec(&img, &options).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &strings(&["echo", "hi"]));
        assert_eq!(process.cwd().to_str(), Some("/srv"));
        assert_eq!(spec.hostname().as_deref(), Some("h"));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        assert_eq!(process.user().username().as_deref(), Some("nobody"));
        let resources = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(resources.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(resources.cpu().as_ref().unwrap().quota(), Some(150_000));
        let caps = process.capabilities().as_ref().unwrap();
        assert!(caps
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::Chown));
        assert!(!caps
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin));
        // The spec is what the agent parses: it must survive JSON.
        let json = serde_json::to_vec(&spec).unwrap();
        let back: Spec = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn privileged_opens_the_vm_to_the_container() {
        let mut options = run(None, &["sh"]);
        options.security.privileged = true;
        let spec = build_spec(&image(&[], &[]), &options).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow());
        assert_eq!(rules[0].typ(), Some(LinuxDeviceType::A));
        assert_eq!((rules[0].major(), rules[0].minor()), (None, None));
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
        assert_eq!(linux.masked_paths().as_deref(), Some(&[][..]));
        assert_eq!(linux.readonly_paths().as_deref(), Some(&[][..]));
        let sys = spec
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination().to_str() == Some("/sys"))
            .unwrap();
        assert!(!sys.options().as_ref().unwrap().contains(&"ro".to_owned()));
        let annotations = spec.annotations().clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get(rvm_protocol::annotations::SECCOMP)
                .map(String::as_str),
            Some("unconfined")
        );
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert!(caps
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin));
        assert!(caps
            .effective()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysRawio));

        // Without it: Docker's defaults stay.
        let spec = build_spec(&image(&[], &[]), &run(None, &["sh"])).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.resources().as_ref().unwrap().devices().is_none());
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_owned()));
        assert!(spec.annotations().clone().unwrap_or_default().is_empty());
        let sys = spec
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination().to_str() == Some("/sys"))
            .unwrap();
        assert!(sys.options().as_ref().unwrap().contains(&"ro".to_owned()));
    }

    #[test]
    fn relative_workdir_is_refused() {
        let mut options = run(None, &["ls"]);
        options.workdir = Some("srv".into());
        assert_eq!(
            build_spec(&image(&[], &[]), &options).unwrap_err(),
            SpecError::RelativeWorkdir("srv".into())
        );
    }
}
