//! Drawing a chart spec into a PNG with plotters (bitmap backend, fonts through ab_glyph).

use std::path::Path;

use anyhow::{anyhow, Context};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::spec::Chart;

const FAMILY: &str = "sans-serif";
const WIDTH: u32 = 1300;
/// The legend's column, right of the plot.
const LEGEND_WIDTH: u32 = 330;
const LEGEND_LINE: i32 = 24;
const BAR_HEIGHT: u32 = 70;
/// Room for the caption and the x axis.
const CHROME_HEIGHT: u32 = 130;

/// Registers the TTF file `path` as the sans-serif font every text of the chart uses.
pub fn register_font(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the font {} (set RVM_CHART_FONT)",
            path.display()
        )
    })?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a TrueType font", path.display()))
}

/// Draws `chart` into the PNG file `out`: one horizontal bar per system, top to bottom, its
/// segments stacked left to right, its total written at its end.
pub fn draw(chart: &Chart, out: &Path) -> anyhow::Result<()> {
    let rows = u32::try_from(chart.bars.len()).context("too many bars")?;
    let labels = chart.segment_labels();
    let legend_rows = u32::try_from(labels.len()).context("too many segments")?;
    let height = CHROME_HEIGHT + (BAR_HEIGHT * rows).max(LEGEND_LINE.unsigned_abs() * legend_rows);
    let root = BitMapBackend::new(out, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (root, legend) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
    let longest = chart.bars.iter().map(|b| b.total()).fold(0.0, f64::max);
    let x_end = if longest > 0.0 { longest * 1.25 } else { 1.0 };
    let count = i32::try_from(rows).context("too many bars")?;
    let mut plot = ChartBuilder::on(&root)
        .caption(&chart.title, (FAMILY, 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(170)
        .build_cartesian_2d(0f64..x_end, (0..count - 1).into_segmented())?;
    let row_of = |index: usize| count - 1 - index as i32;
    let names: Vec<&str> = chart.bars.iter().map(|b| b.label.as_str()).collect();
    plot.configure_mesh()
        .disable_y_mesh()
        .y_labels(chart.bars.len())
        .y_label_formatter(&|value| match value {
            SegmentValue::CenterOf(row) => usize::try_from(count - 1 - row)
                .ok()
                .and_then(|index| names.get(index))
                .map(|name| name.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc(chart.unit.as_str())
        .x_label_formatter(&|value| format!("{value:.0}"))
        .label_style((FAMILY, 15))
        .draw()?;

    for (index, label) in labels.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let mut rects = Vec::new();
        for (bar_index, bar) in chart.bars.iter().enumerate() {
            let row = row_of(bar_index);
            let mut start = 0.0;
            for segment in &bar.segments {
                let end = start + segment.value;
                if segment.label == *label {
                    let mut rect = Rectangle::new(
                        [
                            (start, SegmentValue::Exact(row)),
                            (end, SegmentValue::Exact(row + 1)),
                        ],
                        color.filled(),
                    );
                    rect.set_margin(12, 12, 0, 0);
                    rects.push(rect);
                }
                start = end;
            }
        }
        plot.draw_series(rects)?;
        let top = 60 + LEGEND_LINE * i32::try_from(index).context("too many segments")?;
        legend.draw(&Rectangle::new([(0, top), (14, top + 14)], color.filled()))?;
        legend.draw(&Text::new(label.to_string(), (22, top), (FAMILY, 15)))?;
    }

    let total_style = TextStyle::from((FAMILY, 15)).pos(Pos::new(HPos::Left, VPos::Center));
    plot.draw_series(chart.bars.iter().enumerate().map(|(index, bar)| {
        Text::new(
            format!("  {:.0} {}", bar.total(), chart.unit),
            (bar.total(), SegmentValue::CenterOf(row_of(index))),
            total_style.clone(),
        )
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png() {
        register_font(Path::new(crate::DEFAULT_FONT)).unwrap();
        let chart: Chart = serde_json::from_str(
            r#"{"title": "boot", "unit": "ms", "bars": [
                {"label": "rvm", "segments": [{"label": "a", "value": 5}, {"label": "b", "value": 20}]},
                {"label": "runc", "segments": [{"label": "c", "value": 7}]}]}"#,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("chart.png");
        draw(&chart, &out).unwrap();
        let png = std::fs::read(&out).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // Two bars, a caption, axes and a legend: far more than an empty image compresses to.
        assert!(png.len() > 5000, "{} bytes", png.len());
    }
}
