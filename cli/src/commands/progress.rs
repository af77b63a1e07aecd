//! The pull progress display: a bar per download (indicatif) when stdout is a terminal, plain
//! Docker-like status lines otherwise.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rvm_runtime::escape;
use rvm_runtime::image::registry::{Progress, RegistryError};
use rvm_runtime::image::Digest;

/// Shows a pull's progress on stdout.
#[derive(Debug)]
pub struct Display {
    bars: Option<Bars>,
    quiet: bool,
    /// The layer blobs of the image; other blobs (the config) are not shown, as in Docker.
    layers: Mutex<HashSet<Digest>>,
}

struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    active: Mutex<HashMap<Digest, ProgressBar>>,
}

impl std::fmt::Debug for Bars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bars").finish_non_exhaustive()
    }
}

impl Display {
    /// Bars on a terminal, lines otherwise; nothing at all when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let bars = (!quiet && std::io::stdout().is_terminal()).then(|| Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            style: ProgressStyle::with_template(
                "{prefix}: {msg:<12} [{bar:40}] {bytes}/{total_bytes}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
            active: Mutex::new(HashMap::new()),
        });
        Self {
            bars,
            quiet,
            layers: Mutex::new(HashSet::new()),
        }
    }

    /// A status line, above the bars when there are bars.
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(text);
            }
            None => println!("{text}"),
        }
    }

    /// Removes the bars (their final state was reported as lines).
    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            let _ = bars.multi.clear();
        }
    }

    fn is_layer(&self, digest: &Digest) -> bool {
        self.layers
            .lock()
            .map(|layers| layers.contains(digest))
            .unwrap_or(false)
    }

    fn bar(&self, digest: &Digest) -> Option<ProgressBar> {
        let bars = self.bars.as_ref()?;
        let active = bars.active.lock().ok()?;
        active.get(digest).cloned()
    }
}

impl Progress for Display {
    fn resolved(&self, _manifest: &Digest, layers: &[(Digest, u64)]) {
        if let Ok(mut known) = self.layers.lock() {
            known.extend(layers.iter().map(|(digest, _)| digest.clone()));
        }
    }

    fn blob_present(&self, digest: &Digest) {
        self.line(&format!("{}: Already exists", digest.short()));
    }

    fn blob_started(&self, digest: &Digest, size: u64) {
        if !self.is_layer(digest) {
            return;
        }
        match &self.bars {
            Some(bars) => {
                let bar = bars.multi.add(ProgressBar::new(size));
                bar.set_style(bars.style.clone());
                bar.set_prefix(digest.short().to_owned());
                bar.set_message("Downloading");
                if let Ok(mut active) = bars.active.lock() {
                    active.insert(digest.clone(), bar);
                }
            }
            None => self.line(&format!("{}: Pulling fs layer", digest.short())),
        }
    }

    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        if let Some(bar) = self.bar(digest) {
            bar.inc(bytes);
        }
    }

    fn blob_restarted(&self, digest: &Digest) {
        if let Some(bar) = self.bar(digest) {
            bar.set_position(0);
        }
    }

    fn blob_finished(&self, digest: &Digest) {
        match self.bar(digest) {
            Some(bar) => bar.finish_with_message("Download complete"),
            None if self.is_layer(digest) => {
                self.line(&format!("{}: Download complete", digest.short()));
            }
            None => {}
        }
    }

    fn retrying(&self, what: &str, attempt: u32, error: &RegistryError) {
        if !self.quiet {
            let error = escape::controls(&error.to_string()).into_owned();
            eprintln!("rvm: {what} failed (attempt {attempt}), retrying: {error}");
        }
    }

    fn layer_ready(&self, diff_id: &Digest, created: bool) {
        if created {
            self.line(&format!("{}: Pull complete", diff_id.short()));
        }
    }
}
