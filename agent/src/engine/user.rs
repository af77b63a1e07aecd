//! Resolving a Docker-style user ("name", "uid", "uid:gid", "name:group") against the image's
//! /etc/passwd and /etc/group, as Docker does: a numeric uid need not exist, a name must.

use std::fs;
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("invalid user specification {0:?}")]
    Invalid(String),
}

/// The identity a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, from /etc/group plus those the spec adds.
    pub groups: Vec<u32>,
    /// The passwd home directory, for a default HOME.
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 6 {
                return None;
            }
            Some(PasswdEntry {
                name: fields[0].to_owned(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: fields[5].to_owned(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: fields[0].to_owned(),
                gid: fields[2].parse().ok()?,
                members: fields
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The image's account databases (empty when a file is missing, as in a scratch image).
#[derive(Debug, Default)]
pub struct Accounts {
    passwd: Vec<PasswdEntry>,
    groups: Vec<GroupEntry>,
}

impl Accounts {
    /// Reads `etc/passwd` and `etc/group` below `root`.
    pub fn read(root: &Path) -> Self {
        let read = |name: &str| fs::read_to_string(root.join("etc").join(name)).unwrap_or_default();
        Self::parse(&read("passwd"), &read("group"))
    }

    pub fn parse(passwd: &str, group: &str) -> Self {
        Self {
            passwd: parse_passwd(passwd),
            groups: parse_group(group),
        }
    }

    /// Resolves `spec` ("name", "uid", "uid:gid", "name:group"; "" means root).
    pub fn resolve(&self, spec: &str) -> Result<Identity, UserError> {
        let (user, group) = match spec.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (spec, None),
        };
        if group == Some("") {
            return Err(UserError::Invalid(spec.to_owned()));
        }
        let user = if user.is_empty() { "0" } else { user };
        let entry = match user.parse::<u32>() {
            Ok(uid) => self
                .passwd
                .iter()
                .find(|e| e.uid == uid)
                .cloned()
                .unwrap_or(PasswdEntry {
                    name: String::new(),
                    uid,
                    gid: 0,
                    home: "/".to_owned(),
                }),
            Err(_) => self
                .passwd
                .iter()
                .find(|e| e.name == user)
                .cloned()
                .ok_or_else(|| UserError::UnknownUser(user.to_owned()))?,
        };
        let gid = match group {
            None => entry.gid,
            Some(group) => match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => self
                    .groups
                    .iter()
                    .find(|g| g.name == group)
                    .map(|g| g.gid)
                    .ok_or_else(|| UserError::UnknownGroup(group.to_owned()))?,
            },
        };
        let mut groups: Vec<u32> = if entry.name.is_empty() {
            Vec::new()
        } else {
            self.groups
                .iter()
                .filter(|g| g.members.contains(&entry.name))
                .map(|g| g.gid)
                .collect()
        };
        if group.is_none() && !groups.contains(&gid) {
            groups.insert(0, gid);
        }
        groups.dedup();
        Ok(Identity {
            uid: entry.uid,
            gid,
            groups,
            home: entry.home,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\nbob:x:1000:1000::/home/bob:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nbob:x:1000:\nwheel:x:10:bob\naudio:x:29:bob,www\n";

    fn accounts() -> Accounts {
        Accounts::parse(PASSWD, GROUP)
    }

    #[test]
    fn name_resolves_uid_gid_groups_home() {
        let id = accounts().resolve("bob").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1000));
        assert_eq!(id.groups, vec![1000, 10, 29]);
        assert_eq!(id.home, "/home/bob");
    }

    #[test]
    fn numeric_uid_need_not_exist() {
        let id = accounts().resolve("4242").unwrap();
        assert_eq!((id.uid, id.gid), (4242, 0));
        assert_eq!(accounts().resolve("33").unwrap().gid, 33);
    }

    #[test]
    fn uid_gid_and_name_group() {
        let id = accounts().resolve("1000:29").unwrap();
        assert_eq!((id.uid, id.gid), (1000, 29));
        let id = accounts().resolve("www:wheel").unwrap();
        assert_eq!((id.uid, id.gid), (33, 10));
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        assert_eq!(
            accounts().resolve("nobody"),
            Err(UserError::UnknownUser("nobody".into()))
        );
        assert_eq!(
            accounts().resolve("bob:nogroup"),
            Err(UserError::UnknownGroup("nogroup".into()))
        );
        assert!(accounts().resolve("bob:").is_err());
    }

    #[test]
    fn empty_is_root() {
        let id = accounts().resolve("").unwrap();
        assert_eq!((id.uid, id.gid), (0, 0));
    }
}
