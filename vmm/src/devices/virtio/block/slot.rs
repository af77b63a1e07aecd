//! What a virtio-blk device serves now, shared between the device model (config reads on a
//! vCPU thread), its worker (requests) and the host API ([`crate::api`]): the backing image
//! (file, capacity, serial), the configuration generation, and the interrupt that tells the
//! driver the configuration changed.
//!
//! A `--disk` device starts with its image and keeps it. A `--disk-slots` device starts empty
//! (capacity 0, empty serial) and is filled ([`DiskSlot::attach`]) and emptied
//! ([`DiskSlot::detach`]) while the guest runs. Each request works on one snapshot of the
//! backing ([`DiskSlot::current`]), so a swap never tears a request in flight; the snapshot
//! keeps the old file open until that request is done.
//!
//! The guest's side of a swap is the guest's business: it should unmount a slot before the
//! host detaches it, and drop the device's page cache (BLKFLSBUF, `blockdev --flushbufs`)
//! before reading a slot that held another image, whose pages it may still have cached.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::sync::{Arc, Mutex, MutexGuard};

use super::disk::DiskImage;
use super::request::{ID_LEN, SECTOR_SHIFT, SECTOR_SIZE};
use crate::devices::virtio::Interrupt;

/// An image a block device reads (and maybe writes).
#[derive(Debug)]
pub struct Backing {
    /// The open file.
    pub file: Arc<File>,
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// Writes are refused.
    pub read_only: bool,
    /// GET_ID's answer: the serial, NUL-padded.
    pub id: [u8; ID_LEN],
}

/// Why a file handed over at run time cannot back a slot; each message says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The descriptor was opened write-only.
    #[error("the image's file descriptor is not open for reading")]
    NotReadable,
    /// Directories, pipes and sockets cannot back a disk.
    #[error("the image is not a regular file or block device")]
    NotAFile,
    /// The size could not be found.
    #[error("cannot find the image's size: {0}")]
    Size(std::io::Error),
    /// An empty image would look like an empty slot to the guest.
    #[error("the image is empty (0 bytes)")]
    Empty,
    /// The guest sees whole sectors only.
    #[error("the image's size, {0} bytes, is not a multiple of 512")]
    Unaligned(u64),
}

impl Backing {
    /// The backing of a `--disk` image.
    pub fn from_disk(disk: &DiskImage) -> Backing {
        Backing {
            file: Arc::clone(&disk.file),
            sectors: disk.sectors,
            read_only: disk.read_only,
            id: device_id(disk.serial.as_deref()),
        }
    }

    /// A read-only backing for `file`, handed over by the host at run time, with the (already
    /// checked) `serial`. The file must be readable, a regular file or a block device, and a
    /// non-zero multiple of 512 bytes long. No lock is taken: the sender opened the file and
    /// owns its locking.
    pub fn read_only_image(file: File, serial: &str) -> Result<Backing, ImageError> {
        if !readable(&file) {
            return Err(ImageError::NotReadable);
        }
        let bytes = image_size(&file)?;
        if bytes == 0 {
            return Err(ImageError::Empty);
        }
        if bytes % SECTOR_SIZE != 0 {
            return Err(ImageError::Unaligned(bytes));
        }
        Ok(Backing {
            file: Arc::new(file),
            sectors: bytes >> SECTOR_SHIFT,
            read_only: true,
            id: device_id(Some(serial)),
        })
    }
}

/// Whether `file` was opened for reading.
fn readable(file: &File) -> bool {
    // SAFETY: F_GETFL only reads the status flags of our own descriptor; no memory is passed.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_ACCMODE != libc::O_WRONLY
}

/// The size of a regular file or block device in bytes. A block device's metadata says 0, so
/// it is measured by seeking to its end (and back: the sender shares the file offset).
fn image_size(file: &File) -> Result<u64, ImageError> {
    let meta = file.metadata().map_err(ImageError::Size)?;
    let kind = meta.file_type();
    if kind.is_file() {
        return Ok(meta.len());
    }
    if !kind.is_block_device() {
        return Err(ImageError::NotAFile);
    }
    let mut file = file;
    let position = file.stream_position().map_err(ImageError::Size)?;
    let bytes = file.seek(SeekFrom::End(0)).map_err(ImageError::Size)?;
    file.seek(SeekFrom::Start(position))
        .map_err(ImageError::Size)?;
    Ok(bytes)
}

/// The serial as GET_ID returns it: NUL-padded to 20 bytes (cut to 20 if longer).
pub fn device_id(serial: Option<&str>) -> [u8; ID_LEN] {
    let mut id = [0u8; ID_LEN];
    if let Some(serial) = serial {
        let len = serial.len().min(ID_LEN);
        id[..len].copy_from_slice(&serial.as_bytes()[..len]);
    }
    id
}

/// Why a slot cannot be swapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// Attach to a slot that holds an image.
    #[error("is already attached")]
    Attached,
    /// Detach of an empty slot.
    #[error("is not attached")]
    NotAttached,
}

/// The swappable state of one block device.
#[derive(Debug)]
pub struct DiskSlot {
    state: Mutex<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    backing: Option<Arc<Backing>>,
    /// The virtio-mmio ConfigGeneration: changes with every swap.
    generation: u32,
    /// The device's interrupt while the driver has it activated.
    interrupt: Option<Arc<Interrupt>>,
    /// A swap happened while the device was not active: the driver may have read the old
    /// capacity during its probe, so activation announces a change.
    unannounced: bool,
}

impl DiskSlot {
    /// A slot serving `backing`, or empty.
    pub fn new(backing: Option<Backing>) -> DiskSlot {
        DiskSlot {
            state: Mutex::new(SlotState {
                backing: backing.map(Arc::new),
                generation: 0,
                interrupt: None,
                unannounced: false,
            }),
        }
    }

    /// A poisoned lock only means a thread panicked while holding it; every update below is a
    /// handful of assignments, so the state is whole either way.
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// What the device serves now, for one request.
    pub fn current(&self) -> Option<Arc<Backing>> {
        self.lock().backing.clone()
    }

    /// Capacity in sectors (0 when empty).
    pub fn capacity(&self) -> u64 {
        self.lock().backing.as_ref().map_or(0, |b| b.sectors)
    }

    /// The configuration generation.
    pub fn generation(&self) -> u32 {
        self.lock().generation
    }

    /// Puts `backing` in the empty slot; returns its capacity in sectors.
    pub fn attach(&self, backing: Backing) -> Result<u64, SlotError> {
        let mut state = self.lock();
        if state.backing.is_some() {
            return Err(SlotError::Attached);
        }
        let sectors = backing.sectors;
        state.backing = Some(Arc::new(backing));
        changed(&mut state);
        Ok(sectors)
    }

    /// Empties the slot: capacity 0, no serial. Requests already running finish on the old
    /// file, which is closed after them.
    pub fn detach(&self) -> Result<(), SlotError> {
        let mut state = self.lock();
        if state.backing.take().is_none() {
            return Err(SlotError::NotAttached);
        }
        changed(&mut state);
        Ok(())
    }

    /// The driver activated the device: config changes are signalled through `interrupt`.
    pub fn activated(&self, interrupt: Arc<Interrupt>) {
        let mut state = self.lock();
        if std::mem::take(&mut state.unannounced) {
            interrupt.signal_config_change();
        }
        state.interrupt = Some(interrupt);
    }

    /// The driver reset the device.
    pub fn deactivated(&self) {
        self.lock().interrupt = None;
    }
}

/// Bumps the generation and tells the driver, or remembers to once it activates the device.
fn changed(state: &mut SlotState) {
    state.generation = state.generation.wrapping_add(1);
    match &state.interrupt {
        Some(interrupt) => interrupt.signal_config_change(),
        None => state.unannounced = true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use vmm_sys_util::eventfd::EventFd;

    const CONFIG_BIT: u32 = 2;

    fn image(dir: &tempfile::TempDir, name: &str, bytes: usize) -> File {
        let path = dir.path().join(name);
        std::fs::write(&path, vec![7u8; bytes]).unwrap();
        File::open(path).unwrap()
    }

    #[test]
    fn images_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ok = Backing::read_only_image(image(&dir, "ok", 2048), "layer-1").unwrap();
        assert_eq!((ok.sectors, ok.read_only), (4, true));
        assert_eq!(&ok.id[..8], b"layer-1\0");
        let odd = Backing::read_only_image(image(&dir, "odd", 1000), "s").unwrap_err();
        assert_eq!(
            odd.to_string(),
            "the image's size, 1000 bytes, is not a multiple of 512"
        );
        let empty = Backing::read_only_image(image(&dir, "empty", 0), "s").unwrap_err();
        assert!(matches!(empty, ImageError::Empty));
        let directory = File::open(dir.path()).unwrap();
        let not_file = Backing::read_only_image(directory, "s").unwrap_err();
        assert!(matches!(not_file, ImageError::NotAFile));
        let write_only = OpenOptions::new()
            .write(true)
            .open(dir.path().join("ok"))
            .unwrap();
        let not_readable = Backing::read_only_image(write_only, "s").unwrap_err();
        assert!(matches!(not_readable, ImageError::NotReadable));
    }

    #[test]
    fn swaps_bump_the_generation_and_signal_an_active_driver() {
        let dir = tempfile::tempdir().unwrap();
        let slot = DiskSlot::new(None);
        let interrupt = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
        slot.activated(Arc::clone(&interrupt));
        assert_eq!((slot.capacity(), slot.generation()), (0, 0));
        assert_eq!(
            interrupt.status(),
            0,
            "activating an unchanged slot says nothing"
        );
        let backing = Backing::read_only_image(image(&dir, "a", 4096), "a").unwrap();
        assert_eq!(slot.attach(backing), Ok(8));
        assert_eq!((slot.capacity(), slot.generation()), (8, 1));
        assert_eq!(interrupt.status(), CONFIG_BIT);
        let again = Backing::read_only_image(image(&dir, "b", 512), "b").unwrap();
        assert_eq!(slot.attach(again), Err(SlotError::Attached));
        assert_eq!(slot.generation(), 1, "a refused attach changes nothing");
        interrupt.ack(CONFIG_BIT);
        let in_flight = slot.current().unwrap();
        assert_eq!(slot.detach(), Ok(()));
        assert_eq!((slot.capacity(), slot.generation()), (0, 2));
        assert_eq!(interrupt.status(), CONFIG_BIT);
        assert_eq!(in_flight.sectors, 8, "a snapshot outlives the detach");
        assert_eq!(slot.detach(), Err(SlotError::NotAttached));
    }

    #[test]
    fn a_swap_while_inactive_is_announced_on_activation() {
        let dir = tempfile::tempdir().unwrap();
        let slot = DiskSlot::new(None);
        let backing = Backing::read_only_image(image(&dir, "a", 512), "a").unwrap();
        slot.attach(backing).unwrap();
        let interrupt = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
        slot.activated(Arc::clone(&interrupt));
        assert_eq!(interrupt.status(), CONFIG_BIT);
        slot.deactivated();
        interrupt.reset();
        slot.detach().unwrap();
        assert_eq!(
            interrupt.status(),
            0,
            "no interrupt while the driver is away"
        );
        slot.activated(Arc::clone(&interrupt));
        assert_eq!(interrupt.status(), CONFIG_BIT);
    }
}
