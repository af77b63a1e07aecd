//! `rvm-bench-chart SPEC.json OUT.png`: draws a benchmark's chart (horizontal stacked bars, one
//! per system, one segment per phase) from the chart spec a `bench/` script wrote.
//! The font is DejaVu Sans (Debian's fonts-dejavu-core), or the TTF file in `RVM_CHART_FONT`.

mod draw;
mod spec;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Where Debian's fonts-dejavu-core puts its sans-serif font.
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [spec_path, out] = args.as_slice() else {
        bail!("usage: rvm-bench-chart SPEC.json OUT.png");
    };
    let chart = spec::Chart::read(spec_path)?;
    let font = std::env::var_os("RVM_CHART_FONT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FONT));
    draw::register_font(&font)?;
    draw::draw(&chart, out).with_context(|| format!("cannot draw {}", out.display()))?;
    println!("{}", Path::new(out).display());
    Ok(())
}
