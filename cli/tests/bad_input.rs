//! Bad input to the real `rvm` binary, in a temporary --root: each is refused before any VM is
//! started, with Docker's exit code (125 for `run`, 1 for `rm` and `volume`) and one line naming
//! what was wrong. Also `rvm volume` end to end (needs mkfs.ext4). No VM is needed.

// Test helpers panic on broken fixtures, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/fixtures/prerequisite.rs"]
mod prerequisite;

use std::process::{Command, Output};

fn rvm(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rvm"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("RVM_LOG")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim_end().to_owned()
}

/// Asserts exit `code` and a single stderr line holding every one of `words`.
fn refused(args: &[&str], code: i32, words: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let out = rvm(root.path(), args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    for word in words {
        assert!(err.contains(word), "{args:?}: {word:?} not in {err:?}");
    }
    assert!(
        !root.path().join("volumes").exists(),
        "{args:?} created a volume"
    );
}

#[test]
fn bad_run_flags_exit_125_naming_the_value() {
    refused(
        &["run", "--memory", "12q", "busybox"],
        125,
        &["--memory", "12q"],
    );
    refused(
        &["run", "-e", "=x", "busybox"],
        125,
        &["environment variable", "=x"],
    );
    refused(&["run", "--cpus", "abc", "busybox"], 125, &["abc"]);
    refused(
        &["run", "--name", "bad/name", "busybox"],
        125,
        &["invalid container name", "bad/name"],
    );
    refused(
        &["run", "-v", "data:/d", "-v", "/srv:/p", "busybox"],
        125,
        &["-v /srv:/p", "host directory", "named volume"],
    );
    refused(
        &["run", "-v", "a:/d", "-v", "b:/d", "busybox"],
        125,
        &["Duplicate mount point: /d"],
    );
    refused(
        &["run", "--cap-add", "NOPE", "busybox"],
        125,
        &["--cap-add NOPE", "invalid capability"],
    );
    refused(
        &["run", "--security-opt", "apparmor=unconfined", "busybox"],
        125,
        &["--security-opt", "apparmor=unconfined"],
    );
    refused(
        &["run", "-v", "data:relative", "busybox"],
        125,
        &["invalid volume specification", "data:relative"],
    );
}

#[test]
fn bad_devices_exit_125_naming_the_value() {
    refused(
        &["run", "--device", "/dev/null", "busybox"],
        125,
        &["--device /dev/null", "character device", "VFIO"],
    );
    refused(
        &["run", "--device", "/dev/rvm-missing:/dev/x", "busybox"],
        125,
        &["--device /dev/rvm-missing:/dev/x", "cannot stat"],
    );
    refused(
        &["run", "--device", "dev/loop0", "busybox"],
        125,
        &["--device dev/loop0", "not an absolute path"],
    );
    refused(
        &["run", "--device", "/dev/loop0:/dev/xvdc:rwx", "busybox"],
        125,
        &["--device /dev/loop0:/dev/xvdc:rwx", "\"rwx\""],
    );
    refused(
        &["run", "--device", "/dev/loop0:/dev/xvdc:", "busybox"],
        125,
        &["--device /dev/loop0:/dev/xvdc:", "permissions"],
    );
    refused(
        &["create", "--device", "/dev/loop0:/dev/../x", "busybox"],
        125,
        &["--device /dev/loop0:/dev/../x", "'..'"],
    );
    let root = tempfile::tempdir().unwrap();
    let regular = root.path().join("disk.img");
    std::fs::write(&regular, b"x").unwrap();
    let value = format!("{}:/dev/xvdc", regular.display());
    refused(
        &["run", "--device", &value, "busybox"],
        125,
        &[&format!("--device {value}"), "not a block device"],
    );
}

#[test]
fn bad_log_options_exit_125_naming_the_value() {
    for (flags, words) in [
        (&["--log-opt", "max-size=abc"][..], &["max-size", "abc"][..]),
        (&["--log-opt", "max-file=0"], &["max-file", "0"]),
        (&["--log-opt", "compress=true"], &["compress"]),
        (&["--log-opt", "max-size"], &["max-size", "KEY=VALUE"]),
        (&["--log-driver", "syslog"], &["--log-driver", "syslog"]),
        (
            &["--log-driver", "none", "--log-opt", "max-file=2"],
            &["max-file=2", "none"],
        ),
    ] {
        for command in ["run", "create"] {
            let mut args = vec![command];
            args.extend_from_slice(flags);
            args.push("busybox");
            refused(&args, 125, words);
        }
    }
}

#[test]
fn unknown_flag_is_claps_error_with_exit_125() {
    let root = tempfile::tempdir().unwrap();
    let out = rvm(root.path(), &["run", "--bogus", "busybox"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).starts_with("error: unexpected argument '--bogus' found"));
    // Help is not an error.
    assert_eq!(rvm(root.path(), &["run", "--help"]).status.code(), Some(0));
}

#[test]
fn unknown_image_is_pulled_and_the_pull_error_reported() {
    let root = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the pull fails at once.
    let out = rvm(root.path(), &["run", "--rm", "localhost:1/nosuch", "true"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(
        lines[0],
        "Unable to find image 'localhost:1/nosuch:latest' locally"
    );
    assert!(
        lines[1].starts_with("rvm: ") && lines[1].contains("localhost:1"),
        "{err}"
    );
    assert!(
        !root.path().join("containers").exists() || {
            let mut entries = std::fs::read_dir(root.path().join("containers")).unwrap();
            entries.all(|e| e.unwrap().file_name().to_string_lossy().starts_with('.'))
        }
    );
}

#[test]
fn rm_of_a_missing_container_exits_1_in_dockers_words() {
    refused(
        &["rm", "nosuch"],
        1,
        &["Error response from daemon: No such container: nosuch"],
    );
}

#[test]
fn create_takes_runs_flags_but_not_detach() {
    refused(
        &["create", "--memory", "12q", "busybox"],
        125,
        &["--memory", "12q"],
    );
    let root = tempfile::tempdir().unwrap();
    let out = rvm(root.path(), &["create", "-d", "busybox"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).starts_with("error: unexpected argument '-d' found"));
}

#[test]
fn container_commands_name_a_missing_container() {
    for command in [
        &["wait", "nosuch"][..],
        &["restart", "nosuch"],
        &["port", "nosuch"],
        &["pause", "nosuch"],
        &["unpause", "nosuch"],
        &["rename", "nosuch", "other"],
    ] {
        refused(command, 1, &["No such container: nosuch"]);
    }
    refused(
        &["start", "-a", "nosuch"],
        125,
        &["No such container: nosuch"],
    );
    refused(
        &["rename", "nosuch", "bad/name"],
        1,
        &["invalid container name", "bad/name"],
    );
    refused(
        &["start", "-a", "one", "two"],
        125,
        &["cannot start and attach multiple containers at once"],
    );
}

#[test]
fn volume_commands() {
    if !prerequisite::prerequisite(prerequisite::missing_tool("mkfs.ext4", "e2fsprogs")) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let out = rvm(root.path(), &["volume", "create", "data"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "data\n");
    assert!(root.path().join("volumes/data.ext4").is_file());

    let out = rvm(root.path(), &["volume", "ls"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(listing, "DRIVER    VOLUME NAME\nlocal     data\n");

    let out = rvm(root.path(), &["volume", "inspect", "data"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["Name"], "data");
    assert_eq!(json[0]["Driver"], "local");

    let out = rvm(root.path(), &["volume", "rm", "data"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!root.path().join("volumes/data.ext4").exists());
    let out = rvm(root.path(), &["volume", "ls", "-q"]);
    assert!(out.stdout.is_empty());

    let out = rvm(root.path(), &["volume", "rm", "data"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "rvm: Error response from daemon: get data: no such volume"
    );
    let out = rvm(root.path(), &["volume", "create", "../x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("../x"));
}
