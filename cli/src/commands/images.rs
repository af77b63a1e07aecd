//! `rvm images`: the named images, with Docker's columns REPOSITORY TAG IMAGE ID CREATED SIZE.
//! SIZE is what the image's config and layer blobs take as shipped (compressed).

use std::path::Path;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use rvm_runtime::image::catalog::{self, ImageSummary};
use rvm_runtime::image::{Platform, Store};

use super::human;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show full image IDs.
    #[arg(long)]
    no_trunc: bool,
}

pub fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(root)?;
    let mut images = catalog::list(&store, &Platform::host())?;
    images.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| a.reference.to_string().cmp(&b.reference.to_string()))
    });
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for image in &images {
            let id = id(image, args.no_trunc);
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let now = chrono::Utc::now();
    let mut rows = vec![[
        "REPOSITORY".to_owned(),
        "TAG".to_owned(),
        "IMAGE ID".to_owned(),
        "CREATED".to_owned(),
        "SIZE".to_owned(),
    ]];
    for image in &images {
        let reference = &image.reference;
        rows.push([
            reference.familiar_name(),
            reference.tag().unwrap_or("<none>").to_owned(),
            id(image, args.no_trunc),
            created(image.created.as_deref(), now),
            human::size(image.size),
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

fn id(image: &ImageSummary, no_trunc: bool) -> String {
    match (&image.id, no_trunc) {
        (Some(id), true) => id.to_string(),
        (Some(id), false) => id.short().to_owned(),
        (None, _) => "<invalid>".to_owned(),
    }
}

fn created(created: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(when) = created.and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()) else {
        return "N/A".to_owned();
    };
    let elapsed = (now - when.with_timezone(&chrono::Utc))
        .to_std()
        .unwrap_or_default();
    format!("{} ago", human::duration(elapsed))
}

/// Columns padded to their widest cell plus three spaces, as Docker's tabwriter does.
fn print_table(rows: &[[String; 5]]) {
    let mut widths = [0usize; 5];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   "));
            }
        }
        println!("{}", line.trim_end());
    }
}
