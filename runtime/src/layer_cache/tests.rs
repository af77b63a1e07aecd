//! The cache on both source kinds: building, records, and the pruning policy.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use super::*;
use crate::image::Digest;

/// The disk-building tests need the real tool: erofs-utils is a dependency (tools/install-deps),
/// so its absence is a failure, not a skip.
fn require_mkfs() {
    if let Err(e) = Command::new(MKFS_EROFS).arg("--help").output() {
        panic!("{MKFS_EROFS} cannot be run ({e}): install erofs-utils (tools/install-deps)");
    }
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A directory `name` under `parent` holding one file.
fn layer_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("f"), dir.as_os_str().as_bytes()).unwrap();
    dir
}

fn snapshots(dir: &Path) -> LayerCache<SnapshotDir> {
    LayerCache::new(dir)
}

fn snapshot(dir: &Path) -> SnapshotDir {
    SnapshotDir::of(dir).unwrap()
}

fn prune_snapshots(cache: &LayerCache<SnapshotDir>) -> Pruned {
    cache.prune(SnapshotDir::liveness).unwrap()
}

fn files_of(key: &str) -> [String; 2] {
    [format!("{key}.erofs"), format!("{key}.source")]
}

/// erofs superblock magic 0xE0F5E1E2 at offset 1024.
fn assert_erofs(path: &Path) {
    let bytes = fs::read(path).unwrap();
    assert_eq!(
        &bytes[1024..1028],
        &[0xe2, 0xe1, 0xf5, 0xe0],
        "{}",
        path.display()
    );
}

#[test]
fn disks_are_built_once_per_source_with_their_record() {
    require_mkfs();
    let tmp = tempfile::tempdir().unwrap();
    let layer = layer_dir(tmp.path(), "layer");
    let cache = snapshots(&tmp.path().join("cache"));
    let source = snapshot(&layer);
    assert_eq!(cache.lookup(&source), None);
    let first = cache.ensure(&source, &layer).unwrap();
    assert!(first.created);
    assert_eq!(first.path, cache.disk_path(&source));
    assert_eq!(first.key, source.key());
    let mtime = fs::metadata(&first.path).unwrap().mtime_nsec();
    let again = cache.ensure(&source, &layer).unwrap();
    assert!(!again.created);
    assert_eq!((&again.path, &again.key), (&first.path, &first.key));
    assert_eq!(fs::metadata(&again.path).unwrap().mtime_nsec(), mtime);
    assert_erofs(&first.path);
    let record = fs::read(cache.dir().join(format!("{}.source", first.key))).unwrap();
    assert_eq!(SnapshotDir::parse_record(&record).unwrap(), source);
    assert_eq!(names(cache.dir()), files_of(&first.key));
    use crate::host::private::tests::mode_of;
    assert_eq!(mode_of(cache.dir()), 0o700);
    assert_eq!(mode_of(&first.path), 0o600);
    let record = cache.dir().join(format!("{}.source", first.key));
    assert_eq!(mode_of(&record), 0o600);
}

#[test]
fn a_failed_build_leaves_no_disk_and_names_the_directory() {
    require_mkfs();
    let tmp = tempfile::tempdir().unwrap();
    let cache = snapshots(tmp.path());
    let layer = layer_dir(tmp.path(), "layer");
    let source = snapshot(&layer);
    let missing = tmp.path().join("missing");
    let err = cache.build(&source, &missing).unwrap_err();
    assert!(
        matches!(err, LayerCacheError::Mkfs(MkfsError::Failed { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!cache.disk_path(&source).exists());
    // No temporary file is left; the record written first waits for the next prune.
    let left: Vec<String> = names(tmp.path())
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn concurrent_builders_of_one_key_leave_one_complete_disk() {
    require_mkfs();
    let tmp = tempfile::tempdir().unwrap();
    let layer = layer_dir(tmp.path(), "layer");
    let cache = snapshots(&tmp.path().join("cache"));
    let source = snapshot(&layer);
    let built: Vec<CachedDisk> = std::thread::scope(|scope| {
        let builders: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| cache.build(&source, &layer).unwrap()))
            .collect();
        builders.into_iter().map(|b| b.join().unwrap()).collect()
    });
    assert!(built.iter().all(|d| d.path == built[0].path));
    assert_eq!(names(cache.dir()), files_of(&source.key()));
    assert_erofs(&built[0].path);
}

#[test]
fn prune_removes_the_disks_of_removed_and_replaced_directories() {
    require_mkfs();
    let tmp = tempfile::tempdir().unwrap();
    let cache = snapshots(&tmp.path().join("cache"));
    let layer = layer_dir(tmp.path(), "layer");
    let other = layer_dir(tmp.path(), "other");
    let first = cache.ensure(&snapshot(&layer), &layer).unwrap().key;
    let kept = cache.ensure(&snapshot(&other), &other).unwrap().key;
    let mut expected = [files_of(&first), files_of(&kept)].concat();
    expected.sort();
    assert_eq!(names(cache.dir()), expected);

    // Both directories are there: nothing goes.
    let pruned = prune_snapshots(&cache);
    assert_eq!((pruned.removed.len(), pruned.kept), (0, 2));
    assert_eq!(names(cache.dir()).len(), 4);

    // A new directory at the same path (made before the old one goes, so its inode differs).
    let new = layer_dir(tmp.path(), "layer.new");
    fs::remove_dir_all(&layer).unwrap();
    fs::rename(&new, &layer).unwrap();
    let second = cache.ensure(&snapshot(&layer), &layer).unwrap().key;
    assert_ne!(second, first);
    let pruned = prune_snapshots(&cache);
    assert_eq!(pruned.removed, std::slice::from_ref(&first));
    assert!(pruned.freed_bytes > 0, "{pruned:?}");
    assert_eq!(pruned.kept, 2);
    assert!(!cache.dir().join(format!("{first}.erofs")).exists());
    assert!(!cache.dir().join(format!("{first}.source")).exists());
    assert!(cache.dir().join(format!("{second}.erofs")).is_file());

    // The directory removed: its disk and record go, the other layer's stay.
    fs::remove_dir_all(&layer).unwrap();
    let pruned = prune_snapshots(&cache);
    assert_eq!((pruned.removed, pruned.kept), (vec![second], 1));
    assert_eq!(names(cache.dir()), files_of(&kept));
    // Nothing more to do, and a cache that does not exist is empty.
    assert_eq!(prune_snapshots(&cache).removed.len(), 0);
    assert_eq!(
        prune_snapshots(&snapshots(&tmp.path().join("none"))),
        Pruned::default()
    );
}

#[test]
fn a_snapshot_disk_without_a_record_is_kept_and_gets_one_when_used() {
    require_mkfs();
    let tmp = tempfile::tempdir().unwrap();
    let cache = snapshots(&tmp.path().join("cache"));
    let layer = layer_dir(tmp.path(), "layer");
    let source = snapshot(&layer);
    let key = cache.ensure(&source, &layer).unwrap().key;
    let record = cache.dir().join(format!("{key}.source"));
    fs::remove_file(&record).unwrap();
    // Without a record, a disk is kept even though its directory is gone...
    let moved = tmp.path().join("moved");
    fs::rename(&layer, &moved).unwrap();
    assert_eq!(prune_snapshots(&cache).kept, 1);
    assert!(cache.dir().join(format!("{key}.erofs")).is_file());
    // ...and a use writes the missing record, after which pruning can judge it.
    fs::rename(&moved, &layer).unwrap();
    assert!(!cache.ensure(&source, &layer).unwrap().created);
    assert_eq!(
        SnapshotDir::parse_record(&fs::read(&record).unwrap()).unwrap(),
        snapshot(&layer)
    );
    fs::remove_dir_all(&layer).unwrap();
    assert_eq!(prune_snapshots(&cache).removed, [key]);
}

#[test]
fn entries_prune_cannot_judge_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = snapshots(tmp.path());
    let dir = tmp.path();
    let gone = SnapshotDir {
        dir: dir.join("gone"),
        dev: 1,
        ino: 2,
    };
    // A disk without a record; files that are not the cache's.
    let lone = "0123456789abcdef0123456789abcdef";
    fs::write(dir.join(format!("{lone}.erofs")), b"disk").unwrap();
    fs::write(dir.join("notes.txt"), b"mine").unwrap();
    fs::write(dir.join("short.erofs"), b"x").unwrap();
    // A record under another key than its own, and one that does not parse.
    let wrong = "fedcba9876543210fedcba9876543210";
    assert_ne!(gone.key(), wrong);
    fs::write(dir.join(format!("{wrong}.erofs")), b"disk").unwrap();
    fs::write(dir.join(format!("{wrong}.source")), gone.to_record()).unwrap();
    let garbled = "00000000000000000000000000000000";
    fs::write(dir.join(format!("{garbled}.erofs")), b"disk").unwrap();
    fs::write(dir.join(format!("{garbled}.source")), b"dev one\n").unwrap();
    // A directory that cannot be stat-ed for another reason than "not found".
    let file = dir.join("file");
    fs::write(&file, b"").unwrap();
    let under_file = SnapshotDir {
        dir: file.join("fs"),
        dev: 1,
        ino: 2,
    };
    let [disk, record] = files_of(&under_file.key());
    fs::write(dir.join(disk), b"disk").unwrap();
    fs::write(dir.join(record), under_file.to_record()).unwrap();
    let before = names(dir);

    let pruned = prune_snapshots(&cache);
    assert_eq!(pruned.removed.len(), 0, "{pruned:?}");
    assert_eq!(pruned.kept, 4);
    assert_eq!(names(dir), before);

    // A lone record whose directory is gone goes (a prune cut short between its two removals
    // leaves one).
    fs::write(dir.join(format!("{}.source", gone.key())), gone.to_record()).unwrap();
    let pruned = prune_snapshots(&cache);
    assert_eq!((pruned.removed.len(), pruned.lone_records), (0, 1));
    assert_eq!(names(dir), before);
}

#[test]
fn temporary_files_go_only_when_their_process_is_gone_and_they_are_old() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let key = "0123456789abcdef0123456789abcdef";
    let old = SystemTime::now() - STALE_TEMP - Duration::from_secs(60);
    let temp = |name: String, modified: Option<SystemTime>| {
        let path = dir.join(name);
        fs::write(&path, b"half").unwrap();
        if let Some(modified) = modified {
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(modified)
                .unwrap();
        }
        path
    };
    let stale_disk = temp(format!(".{key}.tmp-{dead}-3"), Some(old));
    let stale_record = temp(format!(".{key}.source.tmp-{dead}-4"), Some(old));
    // As older shims named them.
    let stale_older = temp(format!(".{key}.tmp-{dead}"), Some(old));
    let fresh = temp(format!(".{key}.tmp-{dead}-5"), None);
    let live = temp(format!(".{key}.tmp-{}-0", std::process::id()), Some(old));
    let foreign = temp(format!(".other.tmp-{dead}"), Some(old));
    let odd = temp(format!(".{key}.tmp-{dead}-x"), Some(old));

    let pruned = prune_snapshots(&snapshots(dir));
    assert_eq!((pruned.temps, pruned.temp_bytes), (3, 12), "{pruned:?}");
    assert!(!stale_disk.exists() && !stale_record.exists() && !stale_older.exists());
    assert!(fresh.exists() && live.exists() && foreign.exists() && odd.exists());
}

fn image_layers(dir: &Path) -> LayerCache<ImageLayer> {
    LayerCache::new(dir)
}

fn image_layer(name: &str) -> ImageLayer {
    ImageLayer {
        diff_id: Digest::of(name.as_bytes()),
    }
}

/// The judge `image::gc` uses: gone when no image references the diff_id.
fn referenced(diff_ids: &BTreeSet<Digest>) -> impl Fn(&ImageLayer) -> Liveness + '_ {
    |layer| {
        if diff_ids.contains(&layer.diff_id) {
            Liveness::Live
        } else {
            Liveness::Gone("no image references it")
        }
    }
}

#[test]
fn an_image_layer_disk_goes_when_no_image_references_it() {
    require_mkfs();
    let tmp = tempfile::tempdir().unwrap();
    let cache = image_layers(&tmp.path().join("layers"));
    let content = layer_dir(tmp.path(), "rootfs");
    let (used, unused) = (image_layer("used"), image_layer("unused"));
    for layer in [&used, &unused] {
        let disk = cache.ensure(layer, &content).unwrap();
        assert_eq!(
            disk.path,
            cache.dir().join(format!("{}.erofs", layer.diff_id.hex()))
        );
    }
    let record = fs::read(cache.dir().join(format!("{}.source", used.key()))).unwrap();
    assert_eq!(ImageLayer::parse_record(&record).unwrap(), used);

    let refs = BTreeSet::from([used.diff_id.clone()]);
    let pruned = cache.prune(referenced(&refs)).unwrap();
    assert_eq!(pruned.removed, [unused.key()]);
    assert!(pruned.freed_bytes > 0);
    assert_eq!(pruned.kept, 1);
    assert_eq!(names(cache.dir()), files_of(&used.key()));
    assert_eq!(cache.prune(referenced(&refs)).unwrap().kept, 1);
    assert_eq!(
        cache.prune(referenced(&BTreeSet::new())).unwrap().removed,
        [used.key()]
    );
    assert!(names(cache.dir()).is_empty());
}

#[test]
fn an_image_layer_disk_without_a_record_is_judged_by_its_key() {
    // Disks built before records existed: `<diff_id hex>.erofs` alone.
    let tmp = tempfile::tempdir().unwrap();
    let cache = image_layers(tmp.path());
    let (used, unused) = (image_layer("used"), image_layer("unused"));
    for layer in [&used, &unused] {
        fs::write(cache.disk_path(layer), b"old disk").unwrap();
    }
    let refs = BTreeSet::from([used.diff_id.clone()]);
    let pruned = cache.prune(referenced(&refs)).unwrap();
    assert_eq!((pruned.removed, pruned.kept), (vec![unused.key()], 1));
    assert_eq!(names(tmp.path()), [format!("{}.erofs", used.key())]);
    // A use adds the record.
    assert!(!cache.lookup(&used).unwrap().created);
    assert_eq!(names(tmp.path()), files_of(&used.key()));
}

#[test]
fn an_image_layer_record_that_does_not_match_its_key_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = image_layers(tmp.path());
    let (named, other) = (image_layer("named"), image_layer("other"));
    let [disk, record] = files_of(&named.key());
    fs::write(tmp.path().join(&disk), b"disk").unwrap();
    fs::write(tmp.path().join(&record), other.to_record()).unwrap();
    let garbled = image_layer("garbled");
    let [garbled_disk, garbled_record] = files_of(&garbled.key());
    fs::write(tmp.path().join(&garbled_disk), b"disk").unwrap();
    fs::write(tmp.path().join(&garbled_record), b"diff_id sha256:0\n").unwrap();
    let before = names(tmp.path());
    // Nothing is referenced, yet neither disk can be judged.
    let pruned = cache.prune(referenced(&BTreeSet::new())).unwrap();
    assert_eq!((pruned.removed.len(), pruned.kept), (0, 2), "{pruned:?}");
    assert_eq!(names(tmp.path()), before);
}

#[test]
fn a_judge_that_cannot_tell_keeps_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = image_layers(tmp.path());
    let layer = image_layer("layer");
    fs::write(cache.disk_path(&layer), b"disk").unwrap();
    let pruned = cache
        .prune(|_| Liveness::Unknown("store unreadable".into()))
        .unwrap();
    assert_eq!((pruned.removed.len(), pruned.kept), (0, 1));
    assert!(cache.disk_path(&layer).is_file());
}

#[test]
fn remove_takes_the_disk_and_its_record() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = image_layers(tmp.path());
    let layer = image_layer("layer");
    let [disk, record] = files_of(&layer.key());
    fs::write(tmp.path().join(disk), b"disk").unwrap();
    fs::write(tmp.path().join(record), layer.to_record()).unwrap();
    fs::write(tmp.path().join("other"), b"x").unwrap();
    cache.remove(&layer).unwrap();
    assert_eq!(names(tmp.path()), ["other"]);
    // Twice is fine.
    cache.remove(&layer).unwrap();
}
