//! The VMM's own logging and the limits on what a guest can make it write on the host: the
//! `tracing` subscriber on stderr ([`init`]), files kept under a fixed size ([`bounded`]: the
//! console log and stderr when it is a file) and rate limits for the messages a guest can
//! cause ([`ratelimit`], through [`warn_limited!`](crate::warn_limited) and
//! [`error_limited!`](crate::error_limited)).

pub mod bounded;
pub mod ratelimit;

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::sync::Mutex;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use bounded::BoundedFile;

/// Logs `RUST_LOG`'s levels (warnings and errors by default) to stderr, kept to
/// [`bounded::STDERR`]'s size when `bounded` (`--bounded-stderr`) and stderr is a regular file
/// (the runtime's `vmm.log`). `RUST_LOG` is a default level and `target=level` pairs, as
/// `Targets` parses them; not `EnvFilter`, whose span and field filters need the regex engine:
/// half a MiB more of code, most of it resident in every VMM (bench/vmm-start --compare-jail).
pub fn init(bounded: bool) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|text| text.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::WARN));
    tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(stderr_writer(bounded))
        .with_ansi(std::io::stderr().is_terminal())
        .finish()
        .with(filter)
        .init();
}

/// Stderr through a [`BoundedFile`] when asked and it is a regular file, else as it is.
fn stderr_writer(bounded: bool) -> BoxMakeWriter {
    if !bounded {
        return BoxMakeWriter::new(std::io::stderr);
    }
    match bounded_stderr() {
        Ok(Some(file)) => BoxMakeWriter::new(Mutex::new(file)),
        Ok(None) => BoxMakeWriter::new(std::io::stderr),
        Err(e) => {
            eprintln!("rvm-vmm: stderr is not bounded: {e}");
            BoxMakeWriter::new(std::io::stderr)
        }
    }
}

fn bounded_stderr() -> std::io::Result<Option<BoundedFile>> {
    // A second descriptor of the same open file: one offset, shared with `eprintln!`.
    let file = File::from(std::io::stderr().as_fd().try_clone_to_owned()?);
    if !file.metadata()?.file_type().is_file() {
        return Ok(None);
    }
    // Cut through a second open of the same file, readable whatever stderr's mode (a shell's
    // `2>file` is write-only); opened now, before the jail takes away opening files.
    let io = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/fd/2")?;
    BoundedFile::with_io(file, io, bounded::STDERR).map(Some)
}
