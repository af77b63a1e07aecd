//! `rvm pull IMAGE`: fetch an image from its registry into the local store and build its layer
//! disks.
//!
//! Credentials come from the Docker config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`, as `docker login` writes it). Loopback registries are spoken to over
//! plain HTTP; other registries to reach over plain HTTP are listed, comma-separated, in
//! `RVM_INSECURE_REGISTRIES` (`host:port,...`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args as ClapArgs;
use rvm_runtime::image::registry::{self, Credentials, PullOptions};
use rvm_runtime::image::{Reference, Store};

use super::progress::Display;

/// Registries reached over plain HTTP besides loopback ones (comma-separated `host:port`).
pub const INSECURE_ENV: &str = "RVM_INSECURE_REGISTRIES";

#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Credentials are read from the Docker config ($DOCKER_CONFIG/config.json, \
else ~/.docker/config.json: `auths` entries with `auth` or `username`/`password`, as `docker login` \
writes them; credential helpers are not run). Loopback registries are reached over plain HTTP, \
others over HTTPS unless listed in RVM_INSECURE_REGISTRIES (comma-separated host:port)."
)]
pub struct Args {
    /// Only print the image name.
    #[arg(short, long)]
    quiet: bool,
    /// The image: NAME[:TAG] or NAME@DIGEST (`busybox` means docker.io/library/busybox:latest).
    image: String,
}

pub fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let reference = Reference::parse(&args.image)?;
    let store = Store::open(root)?;
    pull(&store, &reference, args.quiet)?;
    println!("{reference}");
    Ok(ExitCode::SUCCESS)
}

/// Pulls `reference` into `store`, showing Docker's progress lines unless `quiet`.
pub fn pull(store: &Store, reference: &Reference, quiet: bool) -> anyhow::Result<()> {
    let options = options()?;
    let display = Display::new(quiet);
    let before = store.resolve(reference)?;
    let what = reference
        .tag()
        .map_or_else(|| reference.familiar(), ToOwned::to_owned);
    display.line(&format!("{what}: Pulling from {}", reference.repository()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let pulled = runtime.block_on(async {
        tokio::select! {
            pulled = registry::pull(store, reference, &options, &display) => pulled.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("pull {}: interrupted", reference.familiar())),
        }
    });
    display.finish();
    let pulled = pulled?;
    display.line(&format!("Digest: {}", pulled.digest));
    let status = if pulled.downloaded == 0 && before.as_ref() == Some(&pulled.digest) {
        "Image is up to date for"
    } else {
        "Downloaded newer image for"
    };
    display.line(&format!("Status: {status} {}", reference.familiar()));
    Ok(())
}

fn options() -> anyhow::Result<PullOptions> {
    let credentials = Credentials::from_docker_config()?;
    let insecure = std::env::var(INSECURE_ENV)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(PullOptions {
        credentials,
        insecure,
        ..PullOptions::default()
    })
}
