//! The compound flag values `--disk`, `--net` and `--vsock`: each is parsed from text
//! ([`FromStr`]) and rendered back to text (`to_arg`).
//!
//! Invariant: `to_arg` returns text only if parsing it gives back the same value. The parsers
//! split on `,` and need UTF-8, so a path or name with a `,`, a non-UTF-8 path and a value the
//! parser refuses (a serial too long, a reserved CID) are refused with a [`RenderError`] naming
//! the flag. Each rendering is parsed back before it is returned, so a case the explicit checks
//! miss is refused too, never passed on changed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Longest virtio-blk serial (the device ID string is 20 bytes).
pub const MAX_DISK_SERIAL: usize = 20;

/// A flag value that cannot be rendered so that `rvm-vmm` parses it back as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value:?}: {problem}")]
pub struct RenderError {
    /// The flag, e.g. `--disk`.
    pub flag: &'static str,
    /// The offending value (lossily converted if it is not UTF-8).
    pub value: String,
    /// What is wrong with it.
    pub problem: RenderProblem,
}

/// Why a value cannot be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderProblem {
    /// Empty, which the parser refuses.
    #[error("empty, which rvm-vmm refuses")]
    Empty,
    /// Holds a `,`, which the parser takes for the start of the next option.
    #[error("contains ',', which separates this flag's options")]
    Comma,
    /// Not UTF-8, which the parser of this flag needs.
    #[error("not UTF-8, which this flag's parser needs")]
    NotUtf8,
    /// The parser refuses the rendered text.
    #[error("rvm-vmm would refuse it: {0}")]
    Refused(String),
    /// The rendered text parses as a different value.
    #[error("rvm-vmm would read it as a different value")]
    Changed,
}

impl RenderError {
    pub(crate) fn new(
        flag: &'static str,
        value: impl AsRef<std::ffi::OsStr>,
        problem: RenderProblem,
    ) -> Self {
        Self {
            flag,
            value: value.as_ref().to_string_lossy().into_owned(),
            problem,
        }
    }
}

/// `--disk PATH[,ro][,serial=ID]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// Backing file.
    pub path: PathBuf,
    /// Read-only.
    pub read_only: bool,
    /// The ID the guest reads from the device (`/sys/block/vdX/serial`), if any.
    pub serial: Option<String>,
}

impl FromStr for DiskSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err("empty disk path".into());
        }
        let mut spec = DiskSpec {
            path: path.into(),
            read_only: false,
            serial: None,
        };
        for option in parts {
            match option.split_once('=') {
                None if option == "ro" => spec.read_only = true,
                Some(("serial", id)) => spec.serial = Some(parse_serial(id)?),
                _ => return Err(format!("unknown disk option {option:?} (ro, serial=ID)")),
            }
        }
        Ok(spec)
    }
}

impl DiskSpec {
    /// The `--disk` value that parses back to `self`.
    pub fn to_arg(&self) -> Result<String, RenderError> {
        const FLAG: &str = "--disk";
        let mut arg = option_text(FLAG, &self.path)?.to_owned();
        if self.read_only {
            arg.push_str(",ro");
        }
        if let Some(serial) = &self.serial {
            no_comma(FLAG, serial)?;
            arg.push_str(",serial=");
            arg.push_str(serial);
        }
        parses_back(FLAG, arg, self)
    }
}

fn parse_serial(id: &str) -> Result<String, String> {
    if id.is_empty() || id.len() > MAX_DISK_SERIAL {
        return Err(format!("serial {id:?}: 1 to {MAX_DISK_SERIAL} bytes"));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "serial {id:?}: printable ASCII without spaces only"
        ));
    }
    Ok(id.to_string())
}

/// `--net tap=NAME[,mac=MAC]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSpec {
    /// TAP device name.
    pub tap: String,
    /// Guest MAC address.
    pub mac: Option<[u8; 6]>,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "MAC {s:?}: expected 6 bytes like 02:00:00:00:00:01"
        ));
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte =
            u8::from_str_radix(part, 16).map_err(|_| format!("MAC {s:?}: bad byte {part:?}"))?;
    }
    Ok(mac)
}

/// Splits `key=value,key=value` into pairs.
fn key_values(s: &str) -> Result<Vec<(&str, &str)>, String> {
    s.split(',')
        .map(|pair| {
            pair.split_once('=')
                .ok_or_else(|| format!("{pair:?}: expected key=value"))
        })
        .collect()
}

impl FromStr for NetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut tap = None;
        let mut mac = None;
        for (key, value) in key_values(s)? {
            match key {
                "tap" if !value.is_empty() && value.len() < 16 => tap = Some(value.to_string()),
                "tap" => return Err(format!("TAP name {value:?}: 1 to 15 characters")),
                "mac" => mac = Some(parse_mac(value)?),
                _ => return Err(format!("unknown key {key:?}")),
            }
        }
        let tap = tap.ok_or("tap=NAME is required")?;
        Ok(NetSpec { tap, mac })
    }
}

impl NetSpec {
    /// The `--net` value that parses back to `self`.
    pub fn to_arg(&self) -> Result<String, RenderError> {
        const FLAG: &str = "--net";
        no_comma(FLAG, &self.tap)?;
        let mut arg = format!("tap={}", self.tap);
        if let Some(mac) = &self.mac {
            arg.push_str(",mac=");
            for (index, byte) in mac.iter().enumerate() {
                if index > 0 {
                    arg.push(':');
                }
                // Writing to a String cannot fail.
                let _ = write!(arg, "{byte:02x}");
            }
        }
        parses_back(FLAG, arg, self)
    }
}

/// `--vsock cid=N,uds=PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockSpec {
    /// Guest context ID (3 or more).
    pub cid: u32,
    /// Host Unix socket of the hybrid vsock.
    pub uds: PathBuf,
}

impl FromStr for VsockSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut cid = None;
        let mut uds = None;
        for (key, value) in key_values(s)? {
            match key {
                "cid" => {
                    let n: u32 = value
                        .parse()
                        .map_err(|_| format!("cid {value:?}: not a number"))?;
                    if n < 3 {
                        return Err(format!("cid {n}: 0-2 are reserved, use 3 or more"));
                    }
                    cid = Some(n);
                }
                "uds" if !value.is_empty() => uds = Some(PathBuf::from(value)),
                _ => return Err(format!("unknown or empty key {key:?}")),
            }
        }
        Ok(VsockSpec {
            cid: cid.ok_or("cid=N is required")?,
            uds: uds.ok_or("uds=PATH is required")?,
        })
    }
}

impl VsockSpec {
    /// The `--vsock` value that parses back to `self`.
    pub fn to_arg(&self) -> Result<String, RenderError> {
        const FLAG: &str = "--vsock";
        let uds = option_text(FLAG, &self.uds)?;
        parses_back(FLAG, format!("cid={},uds={uds}", self.cid), self)
    }
}

/// `--jail uid=N,gid=N,root=DIR`: the unprivileged identity the VMM takes and the empty
/// directory it pivots into once its files are open (see `crate::jail`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailSpec {
    /// The VMM's user ID from then on; never 0.
    pub uid: u32,
    /// The VMM's group ID from then on; never 0.
    pub gid: u32,
    /// An existing directory; the VMM mounts an empty read-only tmpfs on it in its own mount
    /// namespace and makes that its root.
    pub root: PathBuf,
}

impl FromStr for JailSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut uid = None;
        let mut gid = None;
        let mut root = None;
        for (key, value) in key_values(s)? {
            match key {
                "uid" => uid = Some(parse_id("uid", value)?),
                "gid" => gid = Some(parse_id("gid", value)?),
                "root" if value.starts_with('/') => root = Some(PathBuf::from(value)),
                "root" => return Err(format!("root {value:?}: an absolute path is needed")),
                _ => return Err(format!("unknown key {key:?} (uid, gid, root)")),
            }
        }
        Ok(JailSpec {
            uid: uid.ok_or("uid=N is required")?,
            gid: gid.ok_or("gid=N is required")?,
            root: root.ok_or("root=DIR is required")?,
        })
    }
}

/// A jail's user or group ID: a number, and never root's.
fn parse_id(key: &str, value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(0) => Err(format!("{key} 0: the jail never runs as root")),
        Ok(u32::MAX) => Err(format!("{key} {value}: -1 is no ID")),
        Ok(id) => Ok(id),
        Err(_) => Err(format!("{key} {value:?}: not a number")),
    }
}

impl JailSpec {
    /// The `--jail` value that parses back to `self`.
    pub fn to_arg(&self) -> Result<String, RenderError> {
        const FLAG: &str = "--jail";
        let root = option_text(FLAG, &self.root)?;
        parses_back(
            FLAG,
            format!("uid={},gid={},root={root}", self.uid, self.gid),
            self,
        )
    }
}

/// `path` as the text of one comma-separated option: non-empty UTF-8 without a `,`.
fn option_text<'a>(flag: &'static str, path: &'a Path) -> Result<&'a str, RenderError> {
    let text = path
        .to_str()
        .ok_or_else(|| RenderError::new(flag, path, RenderProblem::NotUtf8))?;
    if text.is_empty() {
        return Err(RenderError::new(flag, text, RenderProblem::Empty));
    }
    no_comma(flag, text)?;
    Ok(text)
}

fn no_comma(flag: &'static str, text: &str) -> Result<(), RenderError> {
    if text.contains(',') {
        return Err(RenderError::new(flag, text, RenderProblem::Comma));
    }
    Ok(())
}

/// `text` if it parses back to `expected`.
fn parses_back<T>(flag: &'static str, text: String, expected: &T) -> Result<String, RenderError>
where
    T: FromStr<Err = String> + PartialEq,
{
    match text.parse::<T>() {
        Ok(parsed) if parsed == *expected => Ok(text),
        Ok(_) => Err(RenderError::new(flag, text, RenderProblem::Changed)),
        Err(reason) => Err(RenderError::new(flag, text, RenderProblem::Refused(reason))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(path: &str, read_only: bool, serial: Option<&str>) -> DiskSpec {
        DiskSpec {
            path: path.into(),
            read_only,
            serial: serial.map(str::to_owned),
        }
    }

    #[test]
    fn disks_round_trip() {
        for spec in [
            disk("/a.img", false, None),
            disk("/a.img", true, None),
            disk("/l/0.erofs", true, Some("rvm-layer-0")),
            disk("scratch.ext4", false, Some("12345678901234567890")),
            disk("/with space/=and=equals", true, Some("s=1")),
            disk("ro", false, None),
        ] {
            let text = spec.to_arg().unwrap();
            assert_eq!(text.parse::<DiskSpec>().unwrap(), spec, "{text}");
        }
        assert_eq!(
            disk("/l/0.erofs", true, Some("rvm-layer-0"))
                .to_arg()
                .unwrap(),
            "/l/0.erofs,ro,serial=rvm-layer-0"
        );
    }

    #[test]
    fn disks_that_would_parse_differently_are_refused() {
        let refused = |spec: DiskSpec| spec.to_arg().unwrap_err();
        let comma = refused(disk("/a,ro", false, None));
        assert_eq!(comma.problem, RenderProblem::Comma);
        assert_eq!(
            comma.to_string(),
            "--disk \"/a,ro\": contains ',', which separates this flag's options"
        );
        assert_eq!(refused(disk("", true, None)).problem, RenderProblem::Empty);
        assert_eq!(
            refused(disk("/a", false, Some("x,ro"))).problem,
            RenderProblem::Comma
        );
        let long = refused(disk("/a", false, Some("123456789012345678901")));
        assert_eq!(long.flag, "--disk");
        assert!(
            matches!(&long.problem, RenderProblem::Refused(why) if why.contains("1 to 20 bytes")),
            "{long}"
        );
        for serial in ["", "a b", "é"] {
            let err = refused(disk("/a", false, Some(serial)));
            assert!(matches!(err.problem, RenderProblem::Refused(_)), "{err}");
        }
    }

    #[test]
    fn non_utf8_paths_are_refused_where_the_parser_needs_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/a\xff.img"));
        let err = DiskSpec {
            path: path.clone(),
            read_only: false,
            serial: None,
        }
        .to_arg()
        .unwrap_err();
        assert_eq!((err.flag, err.problem), ("--disk", RenderProblem::NotUtf8));
        let err = VsockSpec { cid: 3, uds: path }.to_arg().unwrap_err();
        assert_eq!((err.flag, err.problem), ("--vsock", RenderProblem::NotUtf8));
    }

    #[test]
    fn nets_round_trip() {
        for spec in [
            NetSpec {
                tap: "tap0".into(),
                mac: None,
            },
            NetSpec {
                tap: "rvmabcdef012345".into(),
                mac: Some([0x02, 0xab, 0xcd, 0xef, 0x01, 0x23]),
            },
            NetSpec {
                tap: "t=1".into(),
                mac: Some([0, 0, 0, 0, 0, 0xff]),
            },
        ] {
            let text = spec.to_arg().unwrap();
            assert_eq!(text.parse::<NetSpec>().unwrap(), spec, "{text}");
        }
        let spec = NetSpec {
            tap: "eth0".into(),
            mac: Some([2, 0, 0, 0, 0, 0xa]),
        };
        assert_eq!(spec.to_arg().unwrap(), "tap=eth0,mac=02:00:00:00:00:0a");
    }

    #[test]
    fn nets_that_would_parse_differently_are_refused() {
        let net = |tap: &str| NetSpec {
            tap: tap.into(),
            mac: None,
        };
        assert_eq!(
            net("a,b").to_arg().unwrap_err().problem,
            RenderProblem::Comma
        );
        for tap in ["", "sixteen-bytes-xx"] {
            let err = net(tap).to_arg().unwrap_err();
            assert_eq!(err.flag, "--net");
            assert!(matches!(err.problem, RenderProblem::Refused(_)), "{err}");
        }
    }

    #[test]
    fn vsocks_round_trip_and_bad_ones_are_refused() {
        for spec in [
            VsockSpec {
                cid: 3,
                uds: "/r/run/abc/vsock".into(),
            },
            VsockSpec {
                cid: u32::MAX,
                uds: "rel=ative".into(),
            },
        ] {
            let text = spec.to_arg().unwrap();
            assert_eq!(text.parse::<VsockSpec>().unwrap(), spec, "{text}");
        }
        let vsock = |cid, uds: &str| VsockSpec {
            cid,
            uds: uds.into(),
        };
        assert_eq!(
            vsock(3, "/a,b").to_arg().unwrap_err().problem,
            RenderProblem::Comma
        );
        assert_eq!(
            vsock(3, "").to_arg().unwrap_err().problem,
            RenderProblem::Empty
        );
        let reserved = vsock(2, "/v").to_arg().unwrap_err();
        assert_eq!(
            reserved.to_string(),
            "--vsock \"cid=2,uds=/v\": rvm-vmm would refuse it: cid 2: 0-2 are reserved, use 3 or more"
        );
    }

    #[test]
    fn jail_round_trips_and_refuses_root() {
        let spec: JailSpec = "uid=200001,gid=200002,root=/run/rvm/x/jail"
            .parse()
            .unwrap();
        assert_eq!((spec.uid, spec.gid), (200001, 200002));
        assert_eq!(spec.root, PathBuf::from("/run/rvm/x/jail"));
        assert_eq!(spec.to_arg().unwrap().parse::<JailSpec>().unwrap(), spec);
        for bad in [
            "uid=0,gid=1,root=/j",
            "uid=1,gid=0,root=/j",
            "uid=1,gid=1,root=j",
            "uid=1,root=/j",
            "uid=x,gid=1,root=/j",
            "uid=1,gid=1,root=/j,extra=1",
        ] {
            assert!(bad.parse::<JailSpec>().is_err(), "{bad}");
        }
        let comma = JailSpec {
            root: "/a,b".into(),
            ..spec
        };
        assert_eq!(comma.to_arg().unwrap_err().problem, RenderProblem::Comma);
    }
}
