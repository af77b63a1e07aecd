//! rvm's virtual machine monitor: boots a Linux guest on KVM with virtio-mmio devices.
