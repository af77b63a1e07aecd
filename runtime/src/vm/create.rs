//! What a container is created from, and the one place its CreateContainer request is built:
//! the CLI's container and a shim task (standalone or in a pod) differ only in the values.

use oci_spec::runtime::Spec;
use rvm_protocol::agent::{
    CreateContainerRequest, DeviceDisk, HostDirectory, HostFile, LayerDisk, VolumeDisk,
};

use rvm_protocol::serial::SCRATCH_SERIAL;

/// A container to create in a VM.
#[derive(Debug, Clone, Default)]
pub struct NewContainer {
    pub id: String,
    pub spec: Spec,
    /// The image's layers, lowest first, by the serial of the disk each is on.
    pub layers: Vec<LayerDisk>,
    /// Volume disks and where they are mounted.
    pub volumes: Vec<VolumeDisk>,
    /// Host block devices (`--device`): their disks and the container's nodes for them.
    pub devices: Vec<DeviceDisk>,
    /// A pty for the init process.
    pub terminal: bool,
    /// A stdin pipe for the init process.
    pub stdin: bool,
    /// Host files the spec binds, sent by content.
    pub files: Vec<HostFile>,
    /// Host directories the spec binds, sent by content.
    pub directories: Vec<HostDirectory>,
    /// Namespaces joined from the pod's sandbox container.
    pub sandbox_namespaces: Vec<String>,
}

/// A layer on the VM's disk with virtio serial `serial`.
pub fn layer_disk(serial: &str, diff_id: &str) -> LayerDisk {
    LayerDisk {
        serial: serial.to_owned(),
        diff_id: diff_id.to_owned(),
        ..Default::default()
    }
}

/// A volume on the VM's disk with virtio serial `serial`, mounted at `destination`.
pub fn volume_disk(serial: &str, destination: &str, read_only: bool) -> VolumeDisk {
    VolumeDisk {
        serial: serial.to_owned(),
        destination: destination.to_owned(),
        read_only,
        ..Default::default()
    }
}

/// The host block device on the VM's disk with virtio serial `serial`, a node at `path` in the
/// container with `permissions` (a subset of "rwm").
pub fn device_disk(serial: &str, path: &str, permissions: &str) -> DeviceDisk {
    DeviceDisk {
        serial: serial.to_owned(),
        path: path.to_owned(),
        permissions: permissions.to_owned(),
        ..Default::default()
    }
}

impl NewContainer {
    /// The CreateContainer request of this container in the VM of sandbox `sandbox_id` (the
    /// container's own id for a VM of its own); its writes go to the VM's scratch disk.
    pub fn request(&self, sandbox_id: &str) -> Result<CreateContainerRequest, serde_json::Error> {
        Ok(CreateContainerRequest {
            container_id: self.id.clone(),
            sandbox_id: sandbox_id.to_owned(),
            oci_spec_json: serde_json::to_vec(&self.spec)?,
            layers: self.layers.clone(),
            scratch_disk_serial: SCRATCH_SERIAL.to_owned(),
            volumes: self.volumes.clone(),
            devices: self.devices.clone(),
            terminal: self.terminal,
            stdin: self.stdin,
            files: self.files.clone(),
            directories: self.directories.clone(),
            sandbox_namespaces: self.sandbox_namespaces.clone(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_every_field() {
        let container = NewContainer {
            id: "c1".into(),
            layers: vec![layer_disk("rvm-layer-0", "sha256:a")],
            volumes: vec![volume_disk("rvm-vol-0", "/data", true)],
            devices: vec![device_disk("rvm-dev-0", "/dev/xvdc", "r")],
            terminal: true,
            stdin: true,
            files: vec![HostFile {
                destination: "/etc/hosts".into(),
                ..Default::default()
            }],
            sandbox_namespaces: vec!["ipc".into()],
            ..Default::default()
        };
        let request = container.request("pod").unwrap();
        assert_eq!(request.container_id, "c1");
        assert_eq!(request.sandbox_id, "pod");
        assert_eq!(request.scratch_disk_serial, SCRATCH_SERIAL);
        assert_eq!(request.layers[0].serial, "rvm-layer-0");
        assert_eq!(request.layers[0].diff_id, "sha256:a");
        assert_eq!(request.volumes[0].destination, "/data");
        assert!(request.volumes[0].read_only);
        assert_eq!(request.devices[0].serial, "rvm-dev-0");
        assert_eq!(request.devices[0].path, "/dev/xvdc");
        assert_eq!(request.devices[0].permissions, "r");
        assert!(request.terminal && request.stdin);
        assert_eq!(request.files[0].destination, "/etc/hosts");
        assert_eq!(request.sandbox_namespaces, ["ipc"]);
        let spec: Spec = serde_json::from_slice(&request.oci_spec_json).unwrap();
        assert_eq!(spec, Spec::default());
    }
}
