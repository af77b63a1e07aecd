//! `rvm rmi IMAGE...`: remove image names (by name, or every name of an image ID with
//! `--force` when there are several), then the blobs and layer disks no other name uses.

use std::path::Path;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use rvm_protocol::exit;
use rvm_runtime::image::{catalog, gc, Platform, Store};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Remove every name of an image given by ID, even when it has several.
    #[arg(short, long)]
    force: bool,
    /// Images by name (`busybox:1.36`) or ID (a prefix of the config digest).
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(root)?;
    let mut failed = false;
    for image in &args.images {
        if let Err(err) = remove(&store, image, args.force) {
            eprintln!("rvm: Error response from daemon: {}", super::message(&err));
            failed = true;
        }
    }
    Ok(if failed {
        super::exit_code(exit::RUNTIME_ERROR)
    } else {
        ExitCode::SUCCESS
    })
}

fn remove(store: &Store, image: &str, force: bool) -> anyhow::Result<()> {
    let names = catalog::find(store, image, &Platform::host())?;
    if names.len() > 1 && !force {
        anyhow::bail!(
            "conflict: unable to delete {image} (must be forced) - image is referenced in multiple repositories"
        );
    }
    let removed = gc::remove_images(store, &names)?;
    for name in &names {
        println!("Untagged: {}", name.familiar());
    }
    for blob in &removed.blobs {
        println!("Deleted: {blob}");
    }
    Ok(())
}
