//! The network files of a container, as Docker gives them: `/etc/hosts` (localhost and the
//! container's own address and hostname), `/etc/resolv.conf` (the host's DNS, chosen by the
//! host) and `/etc/hostname`. They are written into the container's rootfs (its overlay upper)
//! before the container starts, replacing what the image had.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rvm_protocol::agent::ConfigureNetworkRequest;

/// The contents of the network files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkFiles {
    pub hosts: String,
    pub resolv_conf: String,
    pub hostname: String,
}

impl NetworkFiles {
    /// Renders the files of a ConfigureNetwork request.
    pub fn from_request(request: &ConfigureNetworkRequest) -> Self {
        let mut hosts = String::new();
        for entry in &request.hosts {
            if !entry.names.is_empty() {
                hosts.push_str(&format!("{}\t{}\n", entry.ip, entry.names.join(" ")));
            }
        }
        let mut resolv_conf = String::new();
        if let Some(dns) = request.dns.as_ref() {
            for server in &dns.servers {
                resolv_conf.push_str(&format!("nameserver {server}\n"));
            }
            if !dns.searches.is_empty() {
                resolv_conf.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            if !dns.options.is_empty() {
                resolv_conf.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
        }
        let hostname = if request.hostname.is_empty() {
            String::new()
        } else {
            format!("{}\n", request.hostname)
        };
        Self {
            hosts,
            resolv_conf,
            hostname,
        }
    }

    /// Writes the files into `rootfs/etc`. An `/etc` that is not a plain directory (a symlink
    /// could point out of the rootfs) is left alone.
    pub fn write_into(&self, rootfs: &Path) -> io::Result<()> {
        let etc = rootfs.join("etc");
        match fs::symlink_metadata(&etc) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a directory", etc.display()),
                ))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => fs::create_dir(&etc)?,
            Err(err) => return Err(err),
        }
        for (name, text) in [
            ("hosts", &self.hosts),
            ("resolv.conf", &self.resolv_conf),
            ("hostname", &self.hostname),
        ] {
            if !text.is_empty() {
                replace(&etc.join(name), text)?;
            }
        }
        Ok(())
    }
}

/// Replaces `path` (a file or a symlink, never followed) with a new file holding `text`.
fn replace(path: &Path, text: &str) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_protocol::agent::{Dns, HostEntry};

    fn request() -> ConfigureNetworkRequest {
        ConfigureNetworkRequest {
            hostname: "web".into(),
            hosts: vec![
                HostEntry {
                    ip: "127.0.0.1".into(),
                    names: vec!["localhost".into()],
                    ..Default::default()
                },
                HostEntry {
                    ip: "10.88.0.2".into(),
                    names: vec!["web".into()],
                    ..Default::default()
                },
            ],
            dns: Some(Dns {
                servers: vec!["10.0.0.2".into()],
                searches: vec!["lan".into()],
                ..Default::default()
            })
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn renders_docker_like_files() {
        let files = NetworkFiles::from_request(&request());
        assert_eq!(files.hosts, "127.0.0.1\tlocalhost\n10.88.0.2\tweb\n");
        assert_eq!(files.resolv_conf, "nameserver 10.0.0.2\nsearch lan\n");
        assert_eq!(files.hostname, "web\n");
    }

    #[test]
    fn replaces_files_and_symlinks_without_following_them() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        fs::create_dir(&etc).unwrap();
        let target = outside.path().join("victim");
        fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, etc.join("hosts")).unwrap();
        fs::write(etc.join("resolv.conf"), "old").unwrap();
        NetworkFiles::from_request(&request())
            .write_into(root.path())
            .unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(fs::read_to_string(etc.join("hosts"))
            .unwrap()
            .contains("web"));
        assert!(fs::read_to_string(etc.join("resolv.conf"))
            .unwrap()
            .starts_with("nameserver 10.0.0.2"));
    }

    #[test]
    fn refuses_an_etc_symlink() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("etc")).unwrap();
        assert!(NetworkFiles::from_request(&request())
            .write_into(root.path())
            .is_err());
    }
}
