//! Pulling from a real registry (Debian's docker-registry on a loopback port, images pushed with
//! skopeo): digests, shared layers, platform selection, basic auth, and the failures a pull
//! must report clearly while leaving the store as it was.

// Test helpers panic on broken fixtures, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/fixtures/images.rs"]
mod images;
#[path = "../../tests/fixtures/prerequisite.rs"]
mod prerequisite;
#[path = "../../tests/fixtures/registry.rs"]
mod registry;

use std::path::Path;
use std::time::Duration;

use images::Compression;
use registry::Registry;
use rvm_runtime::image::catalog;
use rvm_runtime::image::disk;
use rvm_runtime::image::gc;
use rvm_runtime::image::manifest::Platform;
use rvm_runtime::image::registry::{
    self as pull, Credentials, Login, PullError, PullOptions, RegistryError, RetryPolicy, Silent,
};
use rvm_runtime::image::{Digest, Reference, Store};

fn digest(text: &str) -> Digest {
    Digest::parse(text).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn skip(with_auth: bool) -> bool {
    !prerequisite::prerequisite(registry::missing_tools(with_auth))
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

fn pull_image(
    store: &Store,
    name: &str,
    options: &PullOptions,
) -> Result<pull::PulledImage, PullError> {
    let reference = Reference::parse(name).unwrap();
    runtime().block_on(pull::pull(store, &reference, options, &Silent))
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(read) => read
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Nothing named, no blob, no layer disk, no temporary file.
fn assert_store_empty(store: &Store) {
    assert!(
        store.images().unwrap().is_empty(),
        "names left: {:?}",
        store.images().unwrap()
    );
    assert!(
        store.blobs().unwrap().is_empty(),
        "blobs left: {:?}",
        store.blobs().unwrap()
    );
    assert!(
        entries(&store.layers_dir()).is_empty(),
        "layer files left: {:?}",
        entries(&store.layers_dir())
    );
    assert!(
        entries(&store.tmp_dir()).is_empty(),
        "temporary files left: {:?}",
        entries(&store.tmp_dir())
    );
    let blob_dir = store
        .blob_path(&Digest::of(b""))
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(
        entries(&blob_dir).is_empty(),
        "blob dir entries left: {:?}",
        entries(&blob_dir)
    );
}

struct Setup {
    dir: tempfile::TempDir,
    store: Store,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("root")).unwrap();
    Setup { dir, store }
}

fn push_oci(registry: &Registry, dir: &Path, image: &images::Image, repository_tag: &str) {
    let archive = dir.join(format!("{}.tar", repository_tag.replace(['/', ':'], "_")));
    images::write_oci_archive(image, &archive, repository_tag);
    registry.push(&archive, repository_tag);
}

#[test]
fn pulls_match_the_pushed_digests_and_share_layers() {
    if skip(false) {
        return;
    }
    let s = setup();
    let registry = Registry::start(&s.dir.path().join("registry"), None);
    let busybox = images::busybox_image(Compression::Gzip);
    let three = images::three_layer_image();
    push_oci(&registry, s.dir.path(), &busybox, "rvm/busybox:1.36");
    push_oci(
        &registry,
        s.dir.path(),
        &busybox,
        "rvm/busybox-again:latest",
    );
    push_oci(&registry, s.dir.path(), &three, "rvm/three:v1");

    let options = PullOptions::default();
    let name = format!("{}/rvm/busybox:1.36", registry.host());
    let pulled = pull_image(&s.store, &name, &options).unwrap();
    assert_eq!(pulled.digest, digest(&busybox.manifest_digest));
    assert_eq!(
        pulled.installed.image.config_digest,
        digest(&busybox.config_digest)
    );
    assert_eq!(pulled.installed.image.config.cmd, ["sh"]);
    assert_eq!(pulled.downloaded, 3, "manifest, config and layer");
    for blob in [
        &busybox.manifest_digest,
        &busybox.config_digest,
        &busybox.layers[0].digest,
    ] {
        s.store.verify_blob(&digest(blob)).unwrap();
    }
    let layer_disk = disk::disk_path(&s.store, &digest(&busybox.layers[0].diff_id));
    assert!(
        layer_disk.is_file(),
        "no layer disk {}",
        layer_disk.display()
    );
    assert!(pulled.installed.disks[0].created);

    // The same image under another name: the manifest is already there, nothing is downloaded.
    let again = format!("{}/rvm/busybox-again", registry.host());
    let second = pull_image(&s.store, &again, &options).unwrap();
    assert_eq!(second.downloaded, 0);
    assert!(!second.installed.disks[0].created);

    let three_name = format!("{}/rvm/three:v1", registry.host());
    let pulled = pull_image(&s.store, &three_name, &options).unwrap();
    let diff_ids: Vec<_> = pulled
        .installed
        .disks
        .iter()
        .map(|d| d.diff_id.clone())
        .collect();
    let expected: Vec<_> = three.layers.iter().map(|l| digest(&l.diff_id)).collect();
    assert_eq!(diff_ids, expected);

    let listed: Vec<String> = catalog::list(&s.store, &Platform::host())
        .unwrap()
        .iter()
        .map(|i| format!("{} {}", i.reference, i.id.as_ref().unwrap().short()))
        .collect();
    let host = registry.host();
    assert_eq!(
        listed,
        [
            format!(
                "{host}/rvm/busybox-again:latest {}",
                &images::hex(&busybox.config_digest)[..12]
            ),
            format!(
                "{host}/rvm/busybox:1.36 {}",
                &images::hex(&busybox.config_digest)[..12]
            ),
            format!(
                "{host}/rvm/three:v1 {}",
                &images::hex(&three.config_digest)[..12]
            ),
        ]
    );

    // Removing one name of busybox keeps its content; removing the last one frees it.
    let removed = gc::remove_images(&s.store, &[Reference::parse(&again).unwrap()]).unwrap();
    assert!(
        removed.blobs.is_empty() && removed.disks.is_empty(),
        "{removed:?}"
    );
    let removed = gc::remove_images(&s.store, &[Reference::parse(&name).unwrap()]).unwrap();
    assert_eq!(removed.blobs.len(), 3);
    assert_eq!(removed.disks, [digest(&busybox.layers[0].diff_id)]);
    assert!(!layer_disk.exists());
    let removed = gc::remove_images(&s.store, &[Reference::parse(&three_name).unwrap()]).unwrap();
    assert_eq!(removed.disks.len(), 3);
    assert_store_empty(&s.store);
}

#[test]
fn an_index_yields_its_linux_amd64_image_and_one_without_it_is_refused() {
    if skip(false) {
        return;
    }
    let s = setup();
    let registry = Registry::start(&s.dir.path().join("registry"), None);
    let amd64 = images::three_layer_image();
    let arm64 = images::busybox_image(Compression::Zstd);
    let archive = s.dir.path().join("multi.tar");
    let index = images::write_oci_index_archive(
        &[(&arm64, "arm64"), (&amd64, "amd64")],
        &archive,
        "rvm/multi:1",
    );
    registry.push(&archive, "rvm/multi:1");
    let archive = s.dir.path().join("arm.tar");
    images::write_oci_index_archive(&[(&arm64, "arm64")], &archive, "rvm/arm:1");
    registry.push(&archive, "rvm/arm:1");

    let empty = setup();
    let err = pull_image(
        &empty.store,
        &format!("{}/rvm/arm:1", registry.host()),
        &PullOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
    assert!(err.contains("rvm/arm:1"), "{err}");
    assert_store_empty(&empty.store);

    let pulled = pull_image(
        &s.store,
        &format!("{}/rvm/multi:1", registry.host()),
        &PullOptions::default(),
    )
    .unwrap();
    assert_eq!(pulled.digest, digest(&index));
    assert_eq!(
        pulled.installed.image.manifest,
        digest(&amd64.manifest_digest)
    );
    assert_eq!(
        pulled.installed.image.config_digest,
        digest(&amd64.config_digest)
    );
    // The arm64 image was not downloaded.
    assert!(!s.store.has_blob(&digest(&arm64.layers[0].digest)));
}

#[test]
fn unknown_tag_and_repository_are_named_and_leave_nothing() {
    if skip(false) {
        return;
    }
    let s = setup();
    let registry = Registry::start(&s.dir.path().join("registry"), None);
    push_oci(
        &registry,
        s.dir.path(),
        &images::three_layer_image(),
        "rvm/three:v1",
    );
    for name in ["rvm/three:nope", "rvm/absent:v1"] {
        let err = pull_image(
            &s.store,
            &format!("{}/{name}", registry.host()),
            &PullOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                PullError::Registry {
                    source: RegistryError::ManifestNotFound { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        let (repository, tag) = name.split_once(':').unwrap();
        assert!(
            text.contains(&format!("{repository}:{tag} not found")),
            "{text}"
        );
        assert!(text.contains(&registry.host()), "{text}");
    }
    assert_store_empty(&s.store);
}

#[test]
fn basic_auth_registry_needs_the_right_password() {
    if skip(true) {
        return;
    }
    let s = setup();
    let registry = Registry::start(&s.dir.path().join("registry"), Some(("tester", "right-pw")));
    let image = images::three_layer_image();
    push_oci(&registry, s.dir.path(), &image, "rvm/private:v1");
    let name = format!("{}/rvm/private:v1", registry.host());

    let anonymous = pull_image(&s.store, &name, &PullOptions::default()).unwrap_err();
    let mut wrong = Credentials::none();
    wrong.insert(
        &registry.host(),
        Login {
            username: "tester".into(),
            password: "wrong".into(),
        },
    );
    let options = PullOptions {
        credentials: wrong,
        ..PullOptions::default()
    };
    let refused = pull_image(&s.store, &name, &options).unwrap_err();
    for err in [anonymous, refused] {
        assert!(
            matches!(
                err,
                PullError::Registry {
                    source: RegistryError::Unauthorized { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("unauthorized") && text.contains(&registry.host()),
            "{text}"
        );
    }
    assert_store_empty(&s.store);

    let mut right = Credentials::none();
    right.insert(
        &registry.host(),
        Login {
            username: "tester".into(),
            password: "right-pw".into(),
        },
    );
    let options = PullOptions {
        credentials: right,
        ..PullOptions::default()
    };
    let pulled = pull_image(&s.store, &name, &options).unwrap();
    assert_eq!(pulled.digest, digest(&image.manifest_digest));
}

#[test]
fn a_corrupt_blob_on_the_registry_is_refused_and_leaves_nothing() {
    if skip(false) {
        return;
    }
    let s = setup();
    let registry = Registry::start(&s.dir.path().join("registry"), None);
    let image = images::three_layer_image();
    push_oci(&registry, s.dir.path(), &image, "rvm/three:v1");
    let victim = &image.layers[1].digest;
    let file = registry.blob_file(victim);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let err = pull_image(
        &s.store,
        &format!("{}/rvm/three:v1", registry.host()),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Registry {
                source: RegistryError::DigestMismatch { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(victim) && text.contains("corrupt"), "{text}");
    assert_store_empty(&s.store);
}

#[test]
fn server_errors_are_retried_then_reported() {
    let s = setup();
    let server = registry::FailingServer::start("503 Service Unavailable");
    let options = PullOptions {
        retry: quick_retries(),
        ..PullOptions::default()
    };
    let err = pull_image(&s.store, &format!("{}/rvm/any:v1", server.host()), &options).unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Registry {
                source: RegistryError::Server { status: 503, .. },
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("503") && text.contains(&server.host()),
        "{text}"
    );
    let manifest_requests = server
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("/manifests/v1"))
        .count();
    assert_eq!(manifest_requests, 3, "one request per attempt");
    assert_store_empty(&s.store);
}

#[test]
fn an_unreachable_registry_is_named() {
    let s = setup();
    let host = format!("127.0.0.1:{}", registry::free_port());
    let options = PullOptions {
        retry: quick_retries(),
        ..PullOptions::default()
    };
    let err = pull_image(&s.store, &format!("{host}/rvm/any:v1"), &options).unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Registry {
                source: RegistryError::Unreachable { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&host), "{err}");
    assert_store_empty(&s.store);
}

#[test]
fn prune_removes_what_no_name_uses_and_temp_files_of_dead_processes() {
    if skip(false) {
        return;
    }
    let s = setup();
    let registry = Registry::start(&s.dir.path().join("registry"), None);
    let busybox = images::busybox_image(Compression::Gzip);
    push_oci(&registry, s.dir.path(), &busybox, "rvm/busybox:1");
    let name = format!("{}/rvm/busybox:1", registry.host());
    pull_image(&s.store, &name, &PullOptions::default()).unwrap();
    let orphan = s.store.put_bytes(b"nobody uses me").unwrap();
    // A staging directory of a process that no longer exists (pid_max is below 2^22).
    let stale = s.store.tmp_dir().join(".tmp-4194304-0-1-stage");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("blob-1"), b"half").unwrap();

    let removed = gc::prune(&s.store).unwrap();
    assert_eq!(removed.blobs, vec![orphan]);
    assert_eq!(removed.temp_entries, 1);
    assert!(removed.disks.is_empty());
    assert!(!stale.exists());
    assert!(s.store.has_blob(&digest(&busybox.layers[0].digest)));

    s.store.untag(&Reference::parse(&name).unwrap()).unwrap();
    let removed = gc::prune(&s.store).unwrap();
    assert_eq!(removed.blobs.len(), 3);
    assert_eq!(removed.disks.len(), 1);
    assert!(removed.bytes > busybox.layers[0].blob.len() as u64);
    assert_store_empty(&s.store);
}

#[test]
fn bearer_token_auth_through_the_token_endpoint() {
    let s = setup();
    let image = images::three_layer_image();
    let mut script = registry::Script::image(&image, "rvm/tokened", "v1");
    script.bearer_token = Some("tok-123".to_owned());
    let server = registry::ScriptedRegistry::start(script);
    let pulled = pull_image(
        &s.store,
        &format!("{}/rvm/tokened:v1", server.host()),
        &PullOptions::default(),
    )
    .unwrap();
    assert_eq!(pulled.digest, digest(&image.manifest_digest));
    let requests = server.requests();
    let token = requests
        .iter()
        .position(|r| r.starts_with("GET /token?"))
        .expect("no token request");
    assert!(
        requests[token].contains("scope=repository%3Arvm%2Ftokened%3Apull"),
        "{requests:#?}"
    );
    let blob_requests: Vec<_> = requests.iter().filter(|r| r.contains("/blobs/")).collect();
    assert_eq!(
        blob_requests.len(),
        4,
        "config and three layers: {requests:#?}"
    );
    assert!(
        blob_requests
            .iter()
            .all(|r| r.ends_with("auth=Bearer tok-123")),
        "{requests:#?}"
    );
}

#[test]
fn a_broken_download_resumes_where_it_stopped() {
    let s = setup();
    let image = images::busybox_image(Compression::Gzip);
    let layer = image.layers[0].digest.clone();
    let mut script = registry::Script::image(&image, "rvm/flaky", "v1");
    script.fault = Some((layer.clone(), registry::BlobFault::BreakOnce));
    let server = registry::ScriptedRegistry::start(script);
    let options = PullOptions {
        retry: quick_retries(),
        ..PullOptions::default()
    };
    let pulled = pull_image(
        &s.store,
        &format!("{}/rvm/flaky:v1", server.host()),
        &options,
    )
    .unwrap();
    assert_eq!(pulled.installed.image.layers[0].digest, digest(&layer));
    s.store.verify_blob(&digest(&layer)).unwrap();
    let half = image.layers[0].blob.len() / 2;
    let layer_requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.contains(&format!("/blobs/{layer}")))
        .collect();
    assert_eq!(layer_requests.len(), 2, "{layer_requests:#?}");
    assert!(
        layer_requests[1].contains(&format!("range=bytes={half}-")),
        "{layer_requests:#?}"
    );
}
