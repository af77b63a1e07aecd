//! `rvm system prune`: remove the blobs and layer disks no image name uses, and temporary files
//! of interrupted pulls and loads; print the space reclaimed.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use rvm_runtime::image::{gc, Store};

use super::human;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

pub fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    if !args.force && !confirmed()? {
        return Ok(ExitCode::SUCCESS);
    }
    let store = Store::open(root)?;
    let removed = gc::prune(&store)?;
    if !removed.blobs.is_empty() || !removed.disks.is_empty() {
        println!("Deleted:");
        for blob in &removed.blobs {
            println!("blob {blob}");
        }
        for disk in &removed.disks {
            println!("layer disk {disk}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human::size(removed.bytes));
    Ok(ExitCode::SUCCESS)
}

fn confirmed() -> anyhow::Result<bool> {
    println!("WARNING! This will remove:");
    println!("  - all image content (blobs and layer disks) not used by a named image");
    println!("  - temporary files of interrupted pulls and loads");
    print!("\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
