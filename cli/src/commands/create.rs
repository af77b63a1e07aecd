//! `rvm create`: creates a container as `rvm run` would (image pulled when absent, disks, network
//! address) without booting it, and prints its ID; `rvm start` boots it later.

use anyhow::Result;
use clap::Args;
use rvm_protocol::exit;
use rvm_runtime::sandbox::layout::Layout;

use super::common::report;
use super::run::{self, ContainerFlags};

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct CreateArgs {
    #[command(flatten)]
    flags: ContainerFlags,
}

pub fn main(layout: &Layout, args: CreateArgs) -> i32 {
    match create(layout, &args) {
        Ok(()) => 0,
        Err(err) => report(&err, exit::RUNTIME_ERROR),
    }
}

fn create(layout: &Layout, args: &CreateArgs) -> Result<()> {
    let id = run::create(layout, &args.flags)?;
    println!("{id}");
    Ok(())
}
