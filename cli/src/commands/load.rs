//! `rvm load -i FILE`: import a docker-archive (`docker save`) or an OCI archive (skopeo,
//! buildah), gzip or zstd compressed or not, and build the layer disks of its images. An
//! archive whose images cannot all be made runnable leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args as ClapArgs;
use rvm_runtime::image::{archive, gc, install, Platform, Store};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The archive to read.
    #[arg(short, long, value_name = "FILE")]
    input: PathBuf,
    /// Print nothing on success.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(root)?;
    let lock = store.lock_shared()?;
    let loaded = archive::load(&store, &args.input)?;
    let mut failure = None;
    for image in &loaded {
        if let Err(err) = install::install(&store, &image.digest, &Platform::host()) {
            failure = Some(err);
            break;
        }
    }
    drop(lock);
    if let Some(err) = failure {
        let names: Vec<_> = loaded.iter().filter_map(|i| i.reference.clone()).collect();
        gc::remove_images(&store, &names)
            .context("cannot remove the images of the failed load again")?;
        return Err(err).with_context(|| format!("load {}", args.input.display()));
    }
    if !args.quiet {
        for image in &loaded {
            match &image.reference {
                Some(reference) => println!("Loaded image: {}", reference.familiar()),
                None => println!("Loaded image ID: {}", image.digest),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
