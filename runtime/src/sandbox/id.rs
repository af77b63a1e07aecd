//! Container IDs (64 random hex digits, shown as 12) and generated names (`adjective_noun`), and
//! the rules a user-chosen name must follow.

use thiserror::Error;

/// Characters shown by `rvm ps` of an ID.
pub const SHORT_ID_LEN: usize = 12;

#[derive(Debug, Error)]
pub enum IdError {
    #[error("cannot read random bytes for a container ID: {0}")]
    Random(std::io::Error),
    #[error("invalid container name ({0:?}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
}

/// A new random container ID.
pub fn new_id() -> Result<String, IdError> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())
                .map_err(|err| IdError::Random(err.into()))?;
    }
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Docker never hands out an all-digit short ID (it would read as a number).
    if id[..SHORT_ID_LEN].bytes().all(|b| b.is_ascii_digit()) {
        return new_id();
    }
    Ok(id)
}

/// The 12-digit form of an ID.
pub fn short(id: &str) -> &str {
    id.get(..SHORT_ID_LEN).unwrap_or(id)
}

/// Checks a `--name` as Docker does.
pub fn check_name(name: &str) -> Result<(), IdError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(IdError::BadName(name.to_owned()))
    }
}

const ADJECTIVES: &[&str] = &[
    "admiring", "brave", "calm", "clever", "eager", "elated", "focused", "gallant", "happy",
    "jolly", "keen", "lucid", "nifty", "quirky", "serene", "sharp", "stoic", "tender", "vibrant",
    "zealous",
];
const NOUNS: &[&str] = &[
    "babbage", "curie", "dijkstra", "euler", "fermat", "gauss", "hopper", "johnson", "knuth",
    "lamport", "lovelace", "mccarthy", "noether", "pascal", "ritchie", "shannon", "thompson",
    "turing", "wozniak", "yonath",
];

/// A generated name, picked from the ID's bytes; `attempt` > 0 adds a number as Docker does
/// after a collision.
pub fn generated_name(id: &str, attempt: u32) -> String {
    let byte = |i: usize| {
        id.get(i * 2..i * 2 + 2)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .unwrap_or(0) as usize
    };
    let name = format!(
        "{}_{}",
        ADJECTIVES[byte(0) % ADJECTIVES.len()],
        NOUNS[byte(1) % NOUNS.len()]
    );
    if attempt == 0 {
        name
    } else {
        format!("{name}{attempt}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(short(&a).len(), SHORT_ID_LEN);
    }

    #[test]
    fn names_follow_docker_rules() {
        check_name("web").unwrap();
        check_name("a.b_c-1").unwrap();
        for bad in ["", "-x", "a/b", "a b", "_x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_names_are_valid() {
        let id = new_id().unwrap();
        check_name(&generated_name(&id, 0)).unwrap();
        assert!(generated_name(&id, 3).ends_with('3'));
    }
}
