//! `rvm tag SOURCE TARGET`: gives the image SOURCE (a name or an image ID) the name TARGET,
//! replacing what TARGET named before, as `docker tag` does. The image's content is shared:
//! `rmi` of either name keeps it while the other remains.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args as ClapArgs;
use rvm_runtime::image::{catalog, Platform, Reference, Store};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The image: a name (`busybox:1.36`) or an ID (a prefix of its config digest)
    #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
    source: String,
    /// The new name
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    target: String,
}

pub fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let target = Reference::parse(&args.target)
        .with_context(|| format!("invalid reference format: {:?}", args.target))?;
    if target.digest().is_some() {
        bail!(
            "refusing to create a tag with a digest reference: {}",
            args.target
        );
    }
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    let names = catalog::find(&store, &args.source, &Platform::host())?;
    let mut digests = Vec::new();
    for name in &names {
        if let Some(digest) = store.resolve(name)? {
            if !digests.contains(&digest) {
                digests.push(digest);
            }
        }
    }
    let [digest] = digests.as_slice() else {
        bail!("No such image: {}", args.source);
    };
    store.tag(&target, digest)?;
    Ok(ExitCode::SUCCESS)
}
