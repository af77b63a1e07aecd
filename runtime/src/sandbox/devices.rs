//! `rvm run --device HOST_PATH[:CONTAINER_PATH[:PERMISSIONS]]`, as Docker parses it, bounded by
//! the VM: a host **block** device becomes one more virtio disk of the container's VM
//! (read-only unless the permissions hold `w`), which the agent finds by its serial and makes a
//! node for in the container, allowed by the container's device filter for exactly that device
//! and those permissions. A host character device cannot cross into a VM (rvm has no device
//! passthrough), so it is refused, as is anything that is not a device.
//!
//! Everything here is checked before anything is created: a bad value fails `rvm run` with the
//! flag value named.

use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// Docker's default permissions: read, write, mknod.
pub const DEFAULT_PERMISSIONS: &str = "rwm";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("--device {spec}: {why}")]
    Bad { spec: String, why: String },
    #[error("--device {spec}: {path} is a character device of the host; only host block devices can be given to a container's microVM (as a disk): rvm has no device passthrough (VFIO)")]
    CharDevice { spec: String, path: PathBuf },
    #[error("--device {spec}: {path} is not a block device")]
    NotBlockDevice { spec: String, path: PathBuf },
    #[error("--device {spec}: cannot stat {path}: {reason}")]
    Stat {
        spec: String,
        path: PathBuf,
        reason: String,
    },
    #[error("--device {spec}: {what} {path} is given twice")]
    Duplicate {
        spec: String,
        what: &'static str,
        path: String,
    },
}

/// One `--device` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The flag's value as given, for messages.
    pub text: String,
    /// The host's block device.
    pub host: PathBuf,
    /// Where the node appears in the container.
    pub container: String,
    /// A non-empty subset of `rwm`, each letter once.
    pub permissions: String,
}

impl DeviceSpec {
    /// Whether the container may write the device (its disk is then attached read-write).
    pub fn writable(&self) -> bool {
        self.permissions.contains('w')
    }
}

/// Docker's `validDeviceMode`: a non-empty subset of `rwm`, no letter twice.
pub fn valid_permissions(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 3
        && text.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        && text
            .char_indices()
            .all(|(index, c)| !text[..index].contains(c))
}

/// An absolute path without `..` and other than `/`.
fn check_path(path: &str) -> Result<(), &'static str> {
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err("is not an absolute path");
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("holds '..'");
    }
    if path.components().all(|c| matches!(c, Component::RootDir)) {
        return Err("is the root directory");
    }
    Ok(())
}

/// Parses one `--device` value the way Docker does: `HOST`, `HOST:PERMISSIONS`,
/// `HOST:CONTAINER` or `HOST:CONTAINER:PERMISSIONS`; both paths absolute.
pub fn parse_device(text: &str) -> Result<DeviceSpec, DeviceError> {
    let bad = |why: String| DeviceError::Bad {
        spec: text.to_owned(),
        why,
    };
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, permissions) = match parts.as_slice() {
        [host] => (*host, None, None),
        [host, second] if valid_permissions(second) => (*host, None, Some(*second)),
        [host, container] => (*host, Some(*container), None),
        [host, container, permissions] => (*host, Some(*container), Some(*permissions)),
        _ => {
            return Err(bad(
                "expected HOST_PATH[:CONTAINER_PATH[:PERMISSIONS]]".into()
            ))
        }
    };
    let permissions = permissions.unwrap_or(DEFAULT_PERMISSIONS);
    if !valid_permissions(permissions) {
        return Err(bad(format!(
            "permissions {permissions:?} must be a non-empty subset of \"rwm\""
        )));
    }
    let container = container.unwrap_or(host);
    check_path(host).map_err(|why| bad(format!("the host path {host:?} {why}")))?;
    if host.contains(',') {
        // rvm-vmm's --disk separates its options with ','.
        return Err(bad(format!(
            "the host path {host:?} holds ',', which rvm-vmm's --disk cannot carry"
        )));
    }
    check_path(container).map_err(|why| bad(format!("the container path {container:?} {why}")))?;
    Ok(DeviceSpec {
        text: text.to_owned(),
        host: PathBuf::from(host),
        container: container.to_owned(),
        permissions: permissions.to_owned(),
    })
}

/// Checks that `device`'s host path is a block device now (a symlink such as
/// `/dev/disk/by-id/...` is followed, as Docker does).
pub fn check_host(device: &DeviceSpec) -> Result<(), DeviceError> {
    let metadata = std::fs::metadata(&device.host).map_err(|error| DeviceError::Stat {
        spec: device.text.clone(),
        path: device.host.clone(),
        reason: error.to_string(),
    })?;
    let kind = metadata.file_type();
    if kind.is_block_device() {
        Ok(())
    } else if kind.is_char_device() {
        Err(DeviceError::CharDevice {
            spec: device.text.clone(),
            path: device.host.clone(),
        })
    } else {
        Err(DeviceError::NotBlockDevice {
            spec: device.text.clone(),
            path: device.host.clone(),
        })
    }
}

/// Refuses one host device given twice (a VM can attach a disk once) and two devices at one
/// container path.
pub fn check_unique(devices: &[DeviceSpec]) -> Result<(), DeviceError> {
    for (index, device) in devices.iter().enumerate() {
        let earlier = &devices[..index];
        let duplicate = |what, path: &str| DeviceError::Duplicate {
            spec: device.text.clone(),
            what,
            path: path.to_owned(),
        };
        if earlier.iter().any(|d| d.host == device.host) {
            return Err(duplicate(
                "the host device",
                &device.host.display().to_string(),
            ));
        }
        if earlier.iter().any(|d| d.container == device.container) {
            return Err(duplicate("the container path", &device.container));
        }
    }
    Ok(())
}

/// Parses and checks every `--device` value: syntax, uniqueness, and that each host path is a
/// block device.
pub fn parse_devices(texts: &[String]) -> Result<Vec<DeviceSpec>, DeviceError> {
    let devices = texts
        .iter()
        .map(|text| parse_device(text))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(&devices)?;
    devices.iter().try_for_each(check_host)?;
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(host: &str, container: &str, permissions: &str) -> DeviceSpec {
        DeviceSpec {
            text: String::new(),
            host: host.into(),
            container: container.into(),
            permissions: permissions.into(),
        }
    }

    fn parsed(text: &str) -> DeviceSpec {
        DeviceSpec {
            text: String::new(),
            ..parse_device(text).unwrap()
        }
    }

    #[test]
    fn dockers_forms_parse() {
        assert_eq!(
            parsed("/dev/loop0"),
            device("/dev/loop0", "/dev/loop0", "rwm")
        );
        assert_eq!(
            parsed("/dev/loop0:/dev/xvdc"),
            device("/dev/loop0", "/dev/xvdc", "rwm")
        );
        assert_eq!(
            parsed("/dev/loop0:/dev/xvdc:r"),
            device("/dev/loop0", "/dev/xvdc", "r")
        );
        assert_eq!(
            parsed("/dev/loop0:rw"),
            device("/dev/loop0", "/dev/loop0", "rw")
        );
        // Docker allows any absolute container path, not only below /dev.
        assert_eq!(parsed("/dev/sdb:/disk"), device("/dev/sdb", "/disk", "rwm"));
        assert!(!parsed("/dev/loop0:r").writable());
        assert!(parsed("/dev/loop0:mw").writable());
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for text in [
            "",
            "dev/loop0",
            "/dev/loop0:xvdc",
            "/dev/loop0:/dev/xvdc:rwx",
            "/dev/loop0:/dev/xvdc:",
            "/dev/loop0:/dev/xvdc:rr",
            "/dev/loop0:/dev/../etc/x",
            "/dev/loop0:/",
            "/dev/loop0:/a:r:extra",
            "/dev/loop,0",
        ] {
            let error = parse_device(text).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("--device {text}: ")),
                "{message}"
            );
        }
        assert!(parse_device("/dev/loop0:/x:rwx")
            .unwrap_err()
            .to_string()
            .contains("\"rwx\""));
    }

    #[test]
    fn permissions_are_a_subset_of_rwm() {
        for good in ["r", "w", "m", "rw", "mrw", "rwm"] {
            assert!(valid_permissions(good), "{good}");
        }
        for bad in ["", "x", "rwx", "rr", "rwmr", "R"] {
            assert!(!valid_permissions(bad), "{bad}");
        }
    }

    #[test]
    fn only_host_block_devices_pass() {
        let char_device = parse_device("/dev/null:/dev/n").unwrap();
        let error = check_host(&char_device).unwrap_err();
        assert!(matches!(error, DeviceError::CharDevice { .. }), "{error}");
        assert!(error.to_string().contains("--device /dev/null:/dev/n"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        std::fs::write(&file, b"x").unwrap();
        let regular = parse_device(&format!("{}:/dev/x", file.display())).unwrap();
        assert!(matches!(
            check_host(&regular),
            Err(DeviceError::NotBlockDevice { .. })
        ));
        let missing = parse_device("/dev/rvm-no-such-device").unwrap();
        let error = check_host(&missing).unwrap_err();
        assert!(matches!(error, DeviceError::Stat { .. }), "{error}");
        assert!(error.to_string().contains("/dev/rvm-no-such-device"));
    }

    #[test]
    fn a_device_or_a_container_path_given_twice_is_refused() {
        let a = device("/dev/loop0", "/dev/a", "rwm");
        let b = device("/dev/loop1", "/dev/b", "r");
        assert!(check_unique(&[a.clone(), b.clone()]).is_ok());
        assert!(matches!(
            check_unique(&[a.clone(), device("/dev/loop0", "/dev/c", "r")]),
            Err(DeviceError::Duplicate {
                what: "the host device",
                ..
            })
        ));
        assert!(matches!(
            check_unique(&[a, device("/dev/loop2", "/dev/a", "r")]),
            Err(DeviceError::Duplicate {
                what: "the container path",
                ..
            })
        ));
    }
}
