//! `rvm rename CONTAINER NEW_NAME`: a container's new name, unique in the store, as Docker's
//! rules have it (the container's ID, hostname and VM are unchanged).

use anyhow::{bail, Result};
use clap::Args;
use rvm_runtime::sandbox::id;
use rvm_runtime::sandbox::layout::Layout;

use super::common::{report, EXIT_FAILED};
use super::container;

#[derive(Debug, Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

pub fn main(layout: &Layout, args: RenameArgs) -> i32 {
    match rename(layout, &args) {
        Ok(()) => 0,
        Err(err) => report(&err.context("Error response from daemon"), EXIT_FAILED),
    }
}

fn rename(layout: &Layout, args: &RenameArgs) -> Result<()> {
    let new_name = args.new_name.strip_prefix('/').unwrap_or(&args.new_name);
    id::check_name(new_name)?;
    let containers = container::open(layout)?;
    let found = container::find(&containers, &args.container)?;
    if found.config.name == new_name {
        bail!("Renaming a container with the same name as its current name");
    }
    containers.rename(&found.config.id, new_name)?;
    Ok(())
}
