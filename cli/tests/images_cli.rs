//! The image commands of the `rvm` binary end to end: `pull` from a real registry (Debian's
//! docker-registry, images pushed with skopeo), `load` of both archive kinds, `images`, `rmi`,
//! `system prune`, and the errors and exit status 125 when something is wrong.

// Test helpers panic on broken fixtures, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/fixtures/images.rs"]
mod images;
#[path = "../../tests/fixtures/prerequisite.rs"]
mod prerequisite;
#[path = "../../tests/fixtures/registry.rs"]
mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use images::Compression;
use registry::Registry;

struct Rvm {
    root: PathBuf,
    docker_config: PathBuf,
}

impl Rvm {
    fn new(dir: &Path) -> Self {
        let docker_config = dir.join("docker-config");
        std::fs::create_dir_all(&docker_config).unwrap();
        Self {
            root: dir.join("root"),
            docker_config,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rvm"))
            .args(args)
            .env("RVM_ROOT", &self.root)
            .env("DOCKER_CONFIG", &self.docker_config)
            .env_remove("RVM_INSECURE_REGISTRIES")
            .output()
            .unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "rvm {args:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs and expects Docker's engine-error status 125; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(125), "rvm {args:?}: {stderr}");
        assert!(
            stderr.starts_with("rvm: Error response from daemon: "),
            "{stderr}"
        );
        stderr
    }

    fn login(&self, host: &str, user: &str, password: &str) {
        let config = format!(
            r#"{{"auths": {{"{host}": {{"username": "{user}", "password": "{password}"}}}}}}"#
        );
        std::fs::write(self.docker_config.join("config.json"), config).unwrap();
    }

    /// The layer disks, without their `.source` records.
    fn disks(&self) -> usize {
        self.files("layers")
            .iter()
            .filter(|name| name.ends_with(".erofs"))
            .count()
    }

    fn files(&self, sub: &str) -> Vec<String> {
        match std::fs::read_dir(self.root.join(sub)) {
            Ok(dir) => dir
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// No blob, layer disk or temporary file in the store.
    fn assert_empty(&self) {
        for sub in ["images/blobs/sha256", "layers", "images/tmp"] {
            assert!(
                self.files(sub).is_empty(),
                "{sub} not empty: {:?}",
                self.files(sub)
            );
        }
    }
}

fn skip(with_auth: bool) -> bool {
    !prerequisite::prerequisite(registry::missing_tools(with_auth))
}

fn push_oci(registry: &Registry, dir: &Path, image: &images::Image, repository_tag: &str) {
    let archive = dir.join(format!("{}.tar", repository_tag.replace(['/', ':'], "_")));
    images::write_oci_archive(image, &archive, repository_tag);
    registry.push(&archive, repository_tag);
}

fn short(digest: &str) -> &str {
    &images::hex(digest)[..12]
}

/// The cells of a table row (columns are separated by at least three spaces).
fn cells(line: &str) -> Vec<String> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn pull_images_rmi_and_prune() {
    if skip(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rvm = Rvm::new(dir.path());
    let registry = Registry::start(&dir.path().join("registry"), None);
    let busybox = images::busybox_image(Compression::Gzip);
    let three = images::three_layer_image();
    push_oci(&registry, dir.path(), &busybox, "rvm/busybox:1.36");
    push_oci(&registry, dir.path(), &three, "rvm/three:v1");
    let host = registry.host();

    let out = rvm.ok(&["pull", &format!("{host}/rvm/busybox:1.36")]);
    assert!(
        out.contains(&format!("Digest: {}", busybox.manifest_digest)),
        "{out}"
    );
    assert!(out.contains("Status: Downloaded newer image"), "{out}");
    assert!(
        out.contains(&format!(
            "{}: Pull complete",
            short(&busybox.layers[0].digest)
        )),
        "{out}"
    );
    assert_eq!(
        out.lines().last(),
        Some(format!("{host}/rvm/busybox:1.36").as_str())
    );
    let again = rvm.ok(&["pull", &format!("{host}/rvm/busybox:1.36")]);
    assert!(again.contains("Status: Image is up to date"), "{again}");
    rvm.ok(&["pull", "-q", &format!("{host}/rvm/three:v1")]);
    assert_eq!(rvm.disks(), 4, "one disk per layer");

    let listing = rvm.ok(&["images"]);
    let mut lines = listing.lines();
    assert_eq!(
        cells(lines.next().unwrap()),
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    );
    let mut rows: Vec<Vec<String>> = lines.map(cells).collect();
    rows.sort();
    assert_eq!(rows.len(), 2, "{listing}");
    assert_eq!(
        rows[0][..3],
        [
            format!("{host}/rvm/busybox"),
            "1.36".into(),
            short(&busybox.config_digest).into()
        ]
    );
    assert_eq!(
        rows[1][..3],
        [
            format!("{host}/rvm/three"),
            "v1".into(),
            short(&three.config_digest).into()
        ]
    );
    assert!(rows[0][3].ends_with(" ago"), "{listing}");
    assert!(rows[0][4].ends_with("MB"), "{listing}");
    let mut ids: Vec<String> = rvm
        .ok(&["images", "-q"])
        .lines()
        .map(str::to_owned)
        .collect();
    ids.sort();
    let mut expected = vec![
        short(&busybox.config_digest).to_owned(),
        short(&three.config_digest).to_owned(),
    ];
    expected.sort();
    assert_eq!(ids, expected);

    // Errors name what failed, exit 125, and leave nothing new behind.
    let blobs_before = rvm.files("images/blobs/sha256").len();
    let err = rvm.fails(&["pull", &format!("{host}/rvm/busybox:nope")]);
    assert!(
        err.contains("rvm/busybox:nope not found") && err.contains(&host),
        "{err}"
    );
    assert_eq!(rvm.files("images/blobs/sha256").len(), blobs_before);
    let err = rvm.fails(&["rmi", "not-there:1"]);
    assert!(err.contains("No such image: not-there:1"), "{err}");

    // rmi by ID, then by name; prune finds nothing left to do, then an orphan.
    let out = rvm.ok(&["rmi", short(&three.config_digest)]);
    assert!(
        out.contains(&format!("Untagged: {host}/rvm/three:v1")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Deleted: {}", three.manifest_digest)),
        "{out}"
    );
    assert_eq!(rvm.disks(), 1);
    let out = rvm.ok(&["system", "prune", "-f"]);
    assert_eq!(out.trim(), "Total reclaimed space: 0B");
    rvm.ok(&["rmi", &format!("{host}/rvm/busybox:1.36")]);
    assert!(rvm.ok(&["images", "-q"]).is_empty());
    rvm.assert_empty();
}

#[test]
fn pull_with_docker_config_credentials() {
    if skip(true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rvm = Rvm::new(dir.path());
    let registry = Registry::start(&dir.path().join("registry"), Some(("tester", "right-pw")));
    let image = images::three_layer_image();
    push_oci(&registry, dir.path(), &image, "rvm/private:v1");
    let name = format!("{}/rvm/private:v1", registry.host());

    let err = rvm.fails(&["pull", &name]);
    assert!(
        err.contains("unauthorized") && err.contains(&registry.host()),
        "{err}"
    );
    rvm.login(&registry.host(), "tester", "wrong-pw");
    let err = rvm.fails(&["pull", &name]);
    assert!(err.contains("unauthorized"), "{err}");
    rvm.assert_empty();
    rvm.login(&registry.host(), "tester", "right-pw");
    let out = rvm.ok(&["pull", &name]);
    assert!(
        out.contains(&format!("Digest: {}", image.manifest_digest)),
        "{out}"
    );
}

#[test]
fn a_corrupt_blob_fails_the_pull_cleanly() {
    if skip(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rvm = Rvm::new(dir.path());
    let registry = Registry::start(&dir.path().join("registry"), None);
    let image = images::busybox_image(Compression::Gzip);
    push_oci(&registry, dir.path(), &image, "rvm/busybox:1");
    let layer = &image.layers[0].digest;
    let file = registry.blob_file(layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();

    let err = rvm.fails(&["pull", &format!("{}/rvm/busybox:1", registry.host())]);
    assert!(
        err.contains(layer.as_str()) && err.contains("corrupt"),
        "{err}"
    );
    rvm.assert_empty();
    assert!(rvm.ok(&["images", "-q"]).is_empty());
}

#[test]
fn load_both_archive_kinds_then_remove_them() {
    let dir = tempfile::tempdir().unwrap();
    let rvm = Rvm::new(dir.path());
    let busybox = images::as_docker_layers(&images::busybox_image(Compression::None));
    let docker_archive = dir.path().join("busybox-docker.tar");
    images::write_docker_archive(&busybox, &docker_archive, "busybox:1.36");
    let three = images::three_layer_image();
    let oci_archive = dir.path().join("three-oci.tar");
    images::write_oci_archive(&three, &oci_archive, "rvm-test/three:latest");

    let out = rvm.ok(&["load", "-i", docker_archive.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: busybox:1.36");
    let out = rvm.ok(&["load", "--input", oci_archive.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: rvm-test/three:latest");
    assert_eq!(rvm.disks(), 4, "one disk per layer");
    let listing = rvm.ok(&["images"]);
    let mut rows: Vec<Vec<String>> = listing.lines().skip(1).map(cells).collect();
    rows.sort();
    assert_eq!(
        rows[0][..3],
        [
            "busybox".to_owned(),
            "1.36".into(),
            short(&busybox.config_digest).into()
        ]
    );
    assert_eq!(
        rows[1][..3],
        [
            "rvm-test/three".to_owned(),
            "latest".into(),
            short(&three.config_digest).into()
        ]
    );

    // A truncated archive is refused by name and changes nothing.
    let broken = dir.path().join("broken.tar");
    let bytes = std::fs::read(&oci_archive).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let blobs = rvm.files("images/blobs/sha256").len();
    let err = rvm.fails(&["load", "-i", broken.to_str().unwrap()]);
    assert!(err.contains("broken.tar"), "{err}");
    assert_eq!(rvm.files("images/blobs/sha256").len(), blobs);

    // tag: a second name by name, a third by image ID; rmi of one name keeps the content.
    rvm.ok(&["tag", "busybox:1.36", "mine/box:v1"]);
    rvm.ok(&["tag", short(&busybox.config_digest), "localhost:5000/box"]);
    let listing = rvm.ok(&["images"]);
    let tagged: Vec<Vec<String>> = listing
        .lines()
        .skip(1)
        .map(cells)
        .filter(|row| row[2] == short(&busybox.config_digest))
        .collect();
    assert_eq!(tagged.len(), 3, "{listing}");
    for (source, target, words) in [
        ("nosuch:1", "x:1", &["No such image: nosuch:1"][..]),
        (
            "busybox:1.36",
            "Bad Name",
            &["invalid reference format", "Bad Name"],
        ),
        (
            "busybox:1.36",
            &*format!("box@{}", busybox.config_digest),
            &["refusing to create a tag with a digest reference"],
        ),
    ] {
        let err = rvm.fails(&["tag", source, target]);
        for word in words {
            assert!(err.contains(word), "tag {source} {target}: {err}");
        }
    }
    let out = rvm.ok(&["rmi", "mine/box:v1", "localhost:5000/box"]);
    assert!(
        !out.contains("Deleted:"),
        "the content is still named: {out}"
    );
    let listing = rvm.ok(&["images"]);
    assert!(
        !listing.contains("mine/box") && listing.contains("busybox"),
        "{listing}"
    );

    let out = rvm.ok(&["rmi", "busybox:1.36", "rvm-test/three"]);
    assert!(
        out.contains("Untagged: busybox:1.36") && out.contains("Untagged: rvm-test/three:latest"),
        "{out}"
    );
    rvm.assert_empty();
    let out = rvm.ok(&["system", "prune", "--force"]);
    assert_eq!(out.trim(), "Total reclaimed space: 0B");
}

#[test]
fn prune_reclaims_unreferenced_content() {
    let dir = tempfile::tempdir().unwrap();
    let rvm = Rvm::new(dir.path());
    let image = images::busybox_image(Compression::Gzip);
    let archive = dir.path().join("busybox.tar");
    images::write_oci_archive(&image, &archive, "busybox:latest");
    rvm.ok(&["load", "-i", archive.to_str().unwrap()]);
    // Drop the name behind rvm's back: the content becomes garbage.
    std::fs::write(
        rvm.root.join("images/repositories.json"),
        "{\"images\": {}}\n",
    )
    .unwrap();
    let out = rvm.ok(&["system", "prune", "-f"]);
    assert!(
        out.contains(&format!("blob {}", image.layers[0].digest)),
        "{out}"
    );
    assert!(
        out.contains(&format!("layer disk {}", image.layers[0].diff_id)),
        "{out}"
    );
    let reclaimed = out.lines().last().unwrap();
    assert!(
        reclaimed.starts_with("Total reclaimed space: ") && reclaimed.ends_with("MB"),
        "{out}"
    );
    rvm.assert_empty();
}

/// Non-empty files in staging directories under `images/tmp`.
fn staged_files(rvm: &Rvm) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for stage in std::fs::read_dir(rvm.root.join("images/tmp"))
        .into_iter()
        .flatten()
    {
        let stage = stage.unwrap().path();
        for file in std::fs::read_dir(&stage).into_iter().flatten() {
            let file = file.unwrap().path();
            if std::fs::metadata(&file)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
            {
                found.push(file);
            }
        }
    }
    found
}

#[test]
fn a_killed_pull_leaves_only_temporary_files_which_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let rvm = Rvm::new(dir.path());
    let image = images::busybox_image(Compression::Gzip);
    let layer = image.layers[0].digest.clone();
    let mut script = registry::Script::image(&image, "rvm/stalls", "v1");
    script.fault = Some((layer, registry::BlobFault::Stall));
    let server = registry::ScriptedRegistry::start(script);

    let mut child = Command::new(env!("CARGO_BIN_EXE_rvm"))
        .args(["pull", &format!("{}/rvm/stalls:v1", server.host())])
        .env("RVM_ROOT", &rvm.root)
        .env("DOCKER_CONFIG", &rvm.docker_config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait, with a deadline, until manifest, config and half the layer sit in staging files,
    // then kill -9.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while staged_files(&rvm).len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pull never staged the layer"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended on its own"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !rvm.files("images/tmp").is_empty(),
        "the killed pull left no staging directory"
    );
    assert!(
        rvm.files("images/blobs/sha256").is_empty(),
        "a half-pulled blob reached the store"
    );
    assert!(rvm.ok(&["images", "-q"]).is_empty());

    let out = rvm.ok(&["system", "prune", "-f"]);
    let half_layer = image.layers[0].blob.len() / 2;
    let reclaimed = out.trim().strip_prefix("Total reclaimed space: ").unwrap();
    assert!(
        reclaimed.ends_with("kB") || reclaimed.ends_with("MB"),
        "{out} (half the layer is {half_layer} bytes)"
    );
    rvm.assert_empty();
}
