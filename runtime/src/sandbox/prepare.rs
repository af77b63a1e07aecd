//! Creating a container: resolving its image, building the layer disks, checking `-v` volume
//! specs, building the spec, recording the container and making its sparse scratch disk.

use rvm_protocol::serial::{device_serial, layer_serial, volume_serial};
use thiserror::Error;

use super::config::{ContainerConfig, DeviceRef, LayerDiskRef, NetworkMode, VmSize, VolumeRef};
use super::devices::{self as host_devices, DeviceError, DeviceSpec};
use super::disks::{self, DiskError, SCRATCH_SIZE};
use super::id::{self, IdError};
use super::layout::Layout;
use super::log::LogConfig;
use super::spec::{self, RunSpec, SpecError};
use super::state::{Containers, StateError};
use super::time;
use super::volumes::{VolumeError, Volumes};
use crate::image::disk::{self as layer_disks, DiskError as LayerDiskError};
use crate::image::manifest::{self, ManifestError, Platform};
use crate::image::reference::ReferenceError;
use crate::image::{Reference, Store};
use crate::network::endpoint::{self, NetworkError};
use crate::network::PortMapping;

/// VM memory when `--memory` is not given.
pub const DEFAULT_VM_MEMORY_MIB: u64 = 256;
/// Memory the guest kernel and agent need beyond the container's limit.
pub const VM_OVERHEAD_MIB: u64 = 64;

#[derive(Debug, Error)]
pub enum PrepareError {
    #[error("Unable to find image '{0}' locally (load it with `rvm load -i FILE` or pull it with `rvm pull`)")]
    ImageNotFound(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    LayerDisk(#[from] LayerDiskError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("invalid volume specification: {spec:?}: {why}")]
    BadVolume { spec: String, why: &'static str },
    #[error("Duplicate mount point: {0}")]
    DuplicateMountPoint(String),
    #[error("volume {0:?} is given twice: a volume's disk can be attached to a microVM once")]
    DuplicateVolume(String),
    #[error("-v {0}: binding a host directory is not supported: rvm has no host directory sharing into its microVMs yet; use a named volume instead (-v NAME:/path)")]
    HostBind(String),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("-p {0}: publishing ports needs bridge networking (--network bridge)")]
    PortsWithoutNetwork(String),
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// A `-v NAME:/path[:ro]` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub destination: String,
    pub read_only: bool,
}

/// Parses `-v`: named volumes only; host directories are refused with a clear message.
pub fn parse_volume(text: &str) -> Result<VolumeSpec, PrepareError> {
    let bad = |why| PrepareError::BadVolume {
        spec: text.to_owned(),
        why,
    };
    let parts: Vec<&str> = text.split(':').collect();
    let (source, destination, mode) = match parts.as_slice() {
        [source, destination] => (*source, *destination, None),
        [source, destination, mode] => (*source, *destination, Some(*mode)),
        [_] => {
            return Err(bad(
                "anonymous volumes are not supported; name the volume (NAME:/path)",
            ))
        }
        _ => return Err(bad("expected NAME:/path[:ro]")),
    };
    if source.starts_with('/') || source.starts_with('.') || source.starts_with('~') {
        return Err(PrepareError::HostBind(text.to_owned()));
    }
    if id::check_name(source).is_err() {
        return Err(bad("volume names may only hold [a-zA-Z0-9][a-zA-Z0-9_.-]"));
    }
    if !destination.starts_with('/') || destination == "/" {
        return Err(bad("the destination must be an absolute path other than /"));
    }
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(_) => return Err(bad("the mode must be ro or rw")),
    };
    Ok(VolumeSpec {
        name: source.to_owned(),
        destination: destination.to_owned(),
        read_only,
    })
}

/// Refuses two volumes at one destination (as Docker does) and one volume given twice (its disk
/// can be attached once).
pub fn check_volumes(volumes: &[VolumeSpec]) -> Result<(), PrepareError> {
    for (index, volume) in volumes.iter().enumerate() {
        let earlier = &volumes[..index];
        let destination = volume.destination.trim_end_matches('/');
        if earlier
            .iter()
            .any(|v| v.destination.trim_end_matches('/') == destination)
        {
            return Err(PrepareError::DuplicateMountPoint(
                volume.destination.clone(),
            ));
        }
        if earlier.iter().any(|v| v.name == volume.name) {
            return Err(PrepareError::DuplicateVolume(volume.name.clone()));
        }
    }
    Ok(())
}

/// What `rvm run`/`rvm create` asks for.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// `--name`; empty for a generated one.
    pub name: String,
    pub image: String,
    /// Spec options; an empty hostname becomes the short ID.
    pub run: RunSpec,
    pub volumes: Vec<VolumeSpec>,
    pub open_stdin: bool,
    pub auto_remove: bool,
    pub network: NetworkMode,
    /// `-p`; only with [`NetworkMode::Bridge`].
    pub ports: Vec<PortMapping>,
    /// `--device`: host block devices.
    pub devices: Vec<DeviceSpec>,
    /// `--log-driver`, `--log-opt`.
    pub log: LogConfig,
}

/// The VM size for a container limit of `memory` bytes and `vcpus` CPUs.
pub fn vm_size(memory: Option<u64>, vcpus: u32) -> VmSize {
    let memory_mib = match memory {
        Some(bytes) => bytes.div_ceil(1 << 20) + VM_OVERHEAD_MIB,
        None => DEFAULT_VM_MEMORY_MIB,
    };
    VmSize {
        memory_mib,
        vcpus: vcpus.max(1),
    }
}

/// Creates the container: everything is on disk and the state is `created` when this returns.
pub fn create_container(
    layout: &Layout,
    store: &Store,
    options: CreateOptions,
) -> Result<ContainerConfig, PrepareError> {
    if !options.name.is_empty() {
        id::check_name(&options.name)?;
    }
    let reference = Reference::parse(&options.image)?;
    let image = match manifest::resolve_reference(store, &reference, &Platform::host()) {
        Err(ManifestError::NotFound(_)) => {
            return Err(PrepareError::ImageNotFound(reference.familiar()))
        }
        other => other?,
    };
    host_devices::check_unique(&options.devices)?;
    options
        .devices
        .iter()
        .try_for_each(host_devices::check_host)?;
    let id = id::new_id()?;
    let mut run = options.run.clone();
    if run.hostname.is_empty() {
        run.hostname = id::short(&id).to_owned();
    }
    let spec = spec::build_spec(&image.config, &run)?;
    let endpoint = match options.network {
        NetworkMode::Bridge => Some(endpoint::reserve(layout.root(), &id, &options.ports)?),
        NetworkMode::None => match options.ports.first() {
            Some(port) => return Err(PrepareError::PortsWithoutNetwork(port.to_string())),
            None => None,
        },
    };
    let result = finish_create(
        layout,
        store,
        &image,
        id.clone(),
        options,
        run,
        spec,
        endpoint.clone(),
    );
    if result.is_err() {
        if let Some(endpoint) = &endpoint {
            let _ = endpoint::release(layout.root(), &id, endpoint);
        }
    }
    result
}

/// The rest of [`create_container`], once the address is reserved.
#[allow(clippy::too_many_arguments)]
fn finish_create(
    layout: &Layout,
    store: &Store,
    image: &manifest::ResolvedImage,
    id: String,
    options: CreateOptions,
    run: RunSpec,
    spec: oci_spec::runtime::Spec,
    endpoint: Option<endpoint::Endpoint>,
) -> Result<ContainerConfig, PrepareError> {
    let disks = layer_disks::ensure_image_disks(store, image)?;
    let layers = disks
        .into_iter()
        .enumerate()
        .map(|(index, disk)| LayerDiskRef {
            path: disk.path,
            diff_id: disk.diff_id.to_string(),
            serial: layer_serial(index),
        })
        .collect();
    check_volumes(&options.volumes)?;
    let store_volumes = Volumes::new(layout);
    for volume in &options.volumes {
        store_volumes.check_available(&volume.name, volume.read_only)?;
    }
    let mut volumes = Vec::new();
    for (index, volume) in options.volumes.iter().enumerate() {
        volumes.push(VolumeRef {
            name: volume.name.clone(),
            path: disks::ensure_volume(&layout.volumes_dir(), &volume.name)?,
            serial: volume_serial(index),
            destination: volume.destination.clone(),
            read_only: volume.read_only,
        });
    }
    let devices = options
        .devices
        .iter()
        .enumerate()
        .map(|(index, device)| DeviceRef {
            host_path: device.host.clone(),
            serial: device_serial(index),
            container_path: device.container.clone(),
            permissions: device.permissions.clone(),
        })
        .collect();
    let vcpus = run.cpus.map_or(1, |cpus| cpus.vcpus());
    let config = ContainerConfig {
        id: id.clone(),
        name: options.name,
        image: options.image,
        image_id: image.config_digest.to_string(),
        created: time::now_rfc3339(),
        spec,
        layers,
        scratch: layout.scratch_path(&id),
        volumes,
        vm: vm_size(run.memory, vcpus),
        network: options.network,
        endpoint,
        tty: run.tty,
        open_stdin: options.open_stdin,
        auto_remove: options.auto_remove,
        stop_signal: image.config.stop_signal.clone(),
        privileged: run.security.privileged,
        devices,
        log: options.log,
    };
    let containers = Containers::open(layout)?;
    let config = containers.create(config)?;
    if let Err(err) = disks::create_ext4(&config.scratch, SCRATCH_SIZE) {
        let _ = containers.remove(&id);
        return Err(err.into());
    }
    tracing::info!(%id, name = %config.name, image = %config.image, "container created");
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_volumes_parse() {
        assert_eq!(
            parse_volume("data:/data").unwrap(),
            VolumeSpec {
                name: "data".into(),
                destination: "/data".into(),
                read_only: false
            }
        );
        assert!(parse_volume("data:/data:ro").unwrap().read_only);
    }

    #[test]
    fn host_binds_are_refused_clearly() {
        for text in ["/srv:/srv", "./dir:/x", "/srv:/srv:ro"] {
            let error = parse_volume(text).unwrap_err();
            assert!(matches!(error, PrepareError::HostBind(_)), "{text}");
            let message = error.to_string();
            assert!(message.contains(text), "{message}");
            assert!(message.contains("named volume"), "{message}");
        }
    }

    #[test]
    fn bad_volume_specs_name_the_spec() {
        for text in [
            "data",
            "data:rel",
            "data:/",
            "data:/x:rx",
            "a:b:c:d",
            "bad name:/x",
        ] {
            let error = parse_volume(text).unwrap_err();
            assert!(error.to_string().contains(text), "{error}");
        }
    }

    #[test]
    fn duplicate_volumes_are_refused() {
        let specs = |texts: &[&str]| -> Vec<VolumeSpec> {
            texts.iter().map(|t| parse_volume(t).unwrap()).collect()
        };
        assert!(check_volumes(&specs(&["a:/a", "b:/b"])).is_ok());
        assert_eq!(
            check_volumes(&specs(&["a:/a", "b:/a/"]))
                .unwrap_err()
                .to_string(),
            "Duplicate mount point: /a/"
        );
        assert!(matches!(
            check_volumes(&specs(&["a:/a", "a:/b"])),
            Err(PrepareError::DuplicateVolume(name)) if name == "a"
        ));
    }

    #[test]
    fn vm_is_sized_from_the_limit() {
        assert_eq!(vm_size(None, 1).memory_mib, DEFAULT_VM_MEMORY_MIB);
        assert_eq!(
            vm_size(Some(512 << 20), 2),
            VmSize {
                memory_mib: 576,
                vcpus: 2
            }
        );
        assert_eq!(vm_size(Some(1), 0).vcpus, 1);
    }
}
