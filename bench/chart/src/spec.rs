//! The chart spec: what a `bench/` script asks to be drawn, as JSON.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

/// A chart of horizontal stacked bars.
#[derive(Debug, Deserialize)]
pub struct Chart {
    pub title: String,
    /// The unit of every value, for the axis ("ms").
    pub unit: String,
    /// One bar per system, drawn top to bottom.
    pub bars: Vec<Bar>,
}

/// One bar: its label and its segments, left to right.
#[derive(Debug, Deserialize)]
pub struct Bar {
    pub label: String,
    pub segments: Vec<Segment>,
}

/// One segment of a bar; segments of the same label share a colour and a legend entry.
#[derive(Debug, Deserialize)]
pub struct Segment {
    pub label: String,
    pub value: f64,
}

impl Bar {
    /// The length of the bar: the sum of its segments.
    pub fn total(&self) -> f64 {
        self.segments.iter().map(|s| s.value).sum()
    }
}

impl Chart {
    /// Reads and checks a spec file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let chart: Chart = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a chart spec", path.display()))?;
        chart
            .check()
            .with_context(|| format!("{} is not a usable chart spec", path.display()))?;
        Ok(chart)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.bars.is_empty() {
            bail!("it has no bars");
        }
        for bar in &self.bars {
            if let Some(bad) = bar
                .segments
                .iter()
                .find(|s| !s.value.is_finite() || s.value < 0.0)
            {
                bail!(
                    "bar '{}', segment '{}': {} is not a length",
                    bar.label,
                    bad.label,
                    bad.value
                );
            }
        }
        Ok(())
    }

    /// The segment labels in order of first appearance: the legend.
    pub fn segment_labels(&self) -> Vec<&str> {
        let mut labels: Vec<&str> = Vec::new();
        for segment in self.bars.iter().flat_map(|b| &b.segments) {
            if !labels.contains(&segment.label.as_str()) {
                labels.push(&segment.label);
            }
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Chart> {
        let chart: Chart = serde_json::from_str(text)?;
        chart.check()?;
        Ok(chart)
    }

    #[test]
    fn legend_in_order_of_first_appearance() {
        let chart = parse(
            r#"{"title": "t", "unit": "ms", "bars": [
                {"label": "a", "segments": [{"label": "x", "value": 1}, {"label": "y", "value": 2}]},
                {"label": "b", "segments": [{"label": "z", "value": 3}, {"label": "x", "value": 4}]}]}"#,
        )
        .unwrap();
        assert_eq!(chart.segment_labels(), ["x", "y", "z"]);
        assert_eq!(chart.bars[0].total(), 3.0);
    }

    #[test]
    fn negative_segment_is_refused() {
        let err = parse(
            r#"{"title": "t", "unit": "ms", "bars": [
                {"label": "a", "segments": [{"label": "x", "value": -1}]}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("segment 'x'"), "{err}");
    }

    #[test]
    fn no_bars_is_refused() {
        assert!(parse(r#"{"title": "t", "unit": "ms", "bars": []}"#).is_err());
    }
}
