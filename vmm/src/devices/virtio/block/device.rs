//! The virtio-blk device model: features and configuration space for one disk image or disk
//! slot ([`DiskSlot`]), and the worker that drains its request queue (one request at a time,
//! each against one snapshot of the slot's backing; used-ring updates and the interrupt batched
//! per notification, EVENT_IDX honoured).

use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::disk::DiskImage;
use super::io::{self, Backend};
use super::request::{self, Request, MAX_RANGE_SECTORS, MAX_RANGE_SEGMENTS, SECTOR_SIZE, SEG_MAX};
use super::slot::{Backing, DiskSlot};
use crate::devices::virtio::worker::{Poller, QueueHandler, Worker};
use crate::devices::virtio::{
    ActivateError, ActiveQueues, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};

/// Virtio device ID of a block device.
const VIRTIO_ID_BLOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
/// Entries in the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Device-independent feature: descriptors may point to indirect tables.
const VIRTIO_RING_F_INDIRECT_DESC: u64 =
    1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
/// Length of the configuration space we fill (`struct virtio_blk_config` up to
/// `write_zeroes_may_unmap` and its padding).
const CONFIG_LEN: usize = 60;

const fn bit(feature: u32) -> u64 {
    1 << feature
}

/// Offset of `capacity` (a little-endian u64) in the configuration space.
const CAPACITY: usize = 0;

/// A virtio block device backed by an image file, or a disk slot filled at run time.
#[derive(Debug)]
pub struct Block {
    slot: Arc<DiskSlot>,
    features: u64,
    /// The configuration space but for the capacity, which comes from the slot when read.
    config: [u8; CONFIG_LEN],
    worker: Option<Worker>,
}

impl Block {
    /// A new, inactive device for `disk`.
    pub fn new(disk: &DiskImage) -> Self {
        Block::with_slot(
            DiskSlot::new(Some(Backing::from_disk(disk))),
            disk.read_only,
        )
    }

    /// A new, inactive, empty read-only disk slot: capacity 0 and an empty serial until the
    /// host attaches an image through [`Block::slot`].
    pub fn empty_slot() -> Self {
        Block::with_slot(DiskSlot::new(None), true)
    }

    fn with_slot(slot: DiskSlot, read_only: bool) -> Self {
        let mut features = VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_RING_F_INDIRECT_DESC
            | bit(VIRTIO_BLK_F_SEG_MAX)
            | bit(VIRTIO_BLK_F_BLK_SIZE)
            | bit(VIRTIO_BLK_F_FLUSH);
        if read_only {
            features |= bit(VIRTIO_BLK_F_RO);
        } else {
            features |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
        }
        Block {
            slot: Arc::new(slot),
            features,
            config: config_space(),
            worker: None,
        }
    }

    /// What the device serves, shared: the host API swaps it.
    pub fn slot(&self) -> Arc<DiskSlot> {
        Arc::clone(&self.slot)
    }
}

/// `struct virtio_blk_config`, little-endian, with a zero capacity.
fn config_space() -> [u8; CONFIG_LEN] {
    let mut config = [0u8; CONFIG_LEN];
    let mut put = |offset: usize, bytes: &[u8]| {
        config[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    put(12, &SEG_MAX.to_le_bytes()); // seg_max
    put(20, &(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
    put(36, &MAX_RANGE_SECTORS.to_le_bytes()); // max_discard_sectors
    put(40, &(MAX_RANGE_SEGMENTS as u32).to_le_bytes()); // max_discard_seg
    put(44, &1u32.to_le_bytes()); // discard_sector_alignment
    put(48, &MAX_RANGE_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
    put(52, &(MAX_RANGE_SEGMENTS as u32).to_le_bytes()); // max_write_zeroes_seg
    put(56, &[1]); // write_zeroes_may_unmap
    config
}

impl VirtioDevice for Block {
    fn name(&self) -> &'static str {
        "block"
    }

    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        let mut config = self.config;
        let capacity = self.slot.capacity().to_le_bytes();
        config[CAPACITY..CAPACITY + capacity.len()].copy_from_slice(&capacity);
        let Some(bytes) = config.get(start..) else {
            return;
        };
        let len = data.len().min(bytes.len());
        data[..len].copy_from_slice(&bytes[..len]);
    }

    fn config_generation(&self) -> u32 {
        self.slot.generation()
    }

    fn activate(&mut self, context: ActiveQueues) -> Result<(), ActivateError> {
        let ActiveQueues {
            mem,
            mut queues,
            notifiers,
            interrupt,
            ..
        } = context;
        let queue = queues.pop().ok_or_else(|| ActivateError::BadConfig {
            device: "block",
            reason: "no request queue".into(),
        })?;
        let handler = BlockHandler {
            mem,
            queue,
            interrupt: Arc::clone(&interrupt),
            slot: Arc::clone(&self.slot),
        };
        let worker = Worker::start_device("block", handler, notifiers)?;
        self.worker = Some(worker);
        self.slot.activated(interrupt);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
        self.slot.deactivated();
    }
}

/// The block device's queue processing, on its worker thread.
pub(super) struct BlockHandler {
    pub(super) mem: GuestMemoryMmap,
    pub(super) queue: Queue,
    pub(super) interrupt: Arc<Interrupt>,
    pub(super) slot: Arc<DiskSlot>,
}

impl BlockHandler {
    /// Drains the queue: every available chain gets a used entry; the driver is interrupted
    /// once per batch if it wants to be. A corrupt ring marks the device broken.
    pub(super) fn process(&mut self) {
        loop {
            if self.interrupt.is_broken() {
                return;
            }
            if let Err(e) = self.queue.disable_notification(&self.mem) {
                self.interrupt.mark_broken("block", &e);
                return;
            }
            let mut added = false;
            loop {
                let chain = match self.queue.iter(&self.mem) {
                    Ok(mut chains) => chains.next(),
                    Err(e) => {
                        self.interrupt.mark_broken("block", &e);
                        return;
                    }
                };
                let Some(chain) = chain else {
                    break;
                };
                let head = chain.head_index();
                let backing = self.slot.current();
                let len = handle(&self.mem, backing.as_deref(), chain);
                if let Err(e) = self.queue.add_used(&self.mem, head, len) {
                    self.interrupt.mark_broken("block", &e);
                    return;
                }
                added = true;
            }
            if added {
                match self.queue.needs_notification(&self.mem) {
                    Ok(true) => self.interrupt.signal_used_queue(),
                    Ok(false) => {}
                    Err(e) => {
                        self.interrupt.mark_broken("block", &e);
                        return;
                    }
                }
            }
            match self.queue.enable_notification(&self.mem) {
                Ok(true) => continue,
                Ok(false) => return,
                Err(e) => {
                    self.interrupt.mark_broken("block", &e);
                    return;
                }
            }
        }
    }
}

/// Parses and executes one chain against `backing` (`None`: an empty slot), writes its status
/// byte; returns the used length (bytes written to the guest: data and status). A chain with
/// no status byte gets 0.
fn handle(
    mem: &GuestMemoryMmap,
    backing: Option<&Backing>,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> u32 {
    let capacity = backing.map_or(0, |b| b.sectors);
    let parsed = request::parse(mem, chain, capacity);
    let Some(status) = parsed.status else {
        tracing::debug!("block: request without a status byte dropped");
        return 0;
    };
    let completion = match parsed.request {
        Ok(request) => execute(backing, &request),
        Err(e) => {
            tracing::debug!("block: bad request: {e}");
            io::Completion {
                status: e.status(),
                written: 0,
            }
        }
    };
    status.copy_from(&[completion.status]);
    completion.written.saturating_add(1)
}

/// Runs a well-formed request on the backing, or on an empty slot (where only GET_ID works).
fn execute(backing: Option<&Backing>, request: &Request<'_>) -> io::Completion {
    match backing {
        Some(backing) => {
            let backend = Backend {
                file: &backing.file,
                read_only: backing.read_only,
                id: backing.id,
            };
            io::execute(&backend, request)
        }
        None => io::execute_without_image(request),
    }
}

impl QueueHandler for BlockHandler {
    fn queue_notified(&mut self, _poller: &Poller, _index: usize) {
        self.process();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use virtio_bindings::virtio_blk::*;
    use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    use crate::config::DiskSpec;

    const W: bool = true;
    const R: bool = false;
    const HEADER: u64 = 0x1_0000;
    const STATUS: u64 = 0x1_1000;
    const DATA: u64 = 0x2_0000;
    const SECTORS: u64 = 64;

    /// A disk image in a scratch directory, removed on drop.
    struct Image {
        dir: PathBuf,
        disk: DiskImage,
    }

    impl Drop for Image {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Byte `i` of the test image.
    fn pattern(i: usize) -> u8 {
        (i * 7 % 251) as u8
    }

    fn image(name: &str, read_only: bool, serial: Option<&str>) -> Image {
        let dir = std::env::temp_dir().join(format!("rvm-block-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        let bytes: Vec<u8> = (0..(SECTORS as usize * 512)).map(pattern).collect();
        std::fs::write(&path, bytes).unwrap();
        let disk = DiskImage::open(&DiskSpec {
            path,
            read_only,
            serial: serial.map(str::to_string),
        })
        .unwrap();
        Image { dir, disk }
    }

    fn file_bytes(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn header(mem: &GuestMemoryMmap, addr: u64, request_type: u32, sector: u64) {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&request_type.to_le_bytes());
        bytes[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
    }

    /// Lays out `chains` (each a list of (address, length, device-writable)) in the descriptor
    /// table, makes them available, and runs the device; returns the used lengths.
    fn run(
        mem: &GuestMemoryMmap,
        disk: &DiskImage,
        chains: &[&[(u64, u32, bool)]],
    ) -> (Vec<u32>, Arc<Interrupt>) {
        run_slot(mem, &slot_of(disk), chains)
    }

    fn slot_of(disk: &DiskImage) -> Arc<DiskSlot> {
        Arc::new(DiskSlot::new(Some(Backing::from_disk(disk))))
    }

    /// [`run`] on a disk slot.
    fn run_slot(
        mem: &GuestMemoryMmap,
        slot: &Arc<DiskSlot>,
        chains: &[&[(u64, u32, bool)]],
    ) -> (Vec<u32>, Arc<Interrupt>) {
        let vq = MockSplitQueue::new(mem, 64);
        let mut descs = Vec::new();
        for chain in chains {
            for (i, &(addr, len, writable)) in chain.iter().enumerate() {
                let index = descs.len() as u16;
                let mut flags = if writable {
                    VRING_DESC_F_WRITE as u16
                } else {
                    0
                };
                if i + 1 < chain.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                descs.push(RawDescriptor::from(SplitDescriptor::new(
                    addr,
                    len,
                    flags,
                    index + 1,
                )));
            }
        }
        vq.add_desc_chains(&descs, 0).unwrap();
        let interrupt = run_queue_on(mem, slot, &vq);
        let used = vq.used();
        let count = used.idx().load();
        let lens = (0..count)
            .map(|i| used.ring().ref_at(i as usize).unwrap().load().len())
            .collect();
        (lens, interrupt)
    }

    fn run_queue(
        mem: &GuestMemoryMmap,
        disk: &DiskImage,
        vq: &MockSplitQueue<GuestMemoryMmap>,
    ) -> Arc<Interrupt> {
        run_queue_on(mem, &slot_of(disk), vq)
    }

    fn run_queue_on(
        mem: &GuestMemoryMmap,
        slot: &Arc<DiskSlot>,
        vq: &MockSplitQueue<GuestMemoryMmap>,
    ) -> Arc<Interrupt> {
        let interrupt = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
        let mut handler = BlockHandler {
            mem: mem.clone(),
            queue: vq.create_queue().unwrap(),
            interrupt: Arc::clone(&interrupt),
            slot: Arc::clone(slot),
        };
        handler.process();
        interrupt
    }

    fn status(mem: &GuestMemoryMmap, addr: u64) -> u8 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
    const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

    #[test]
    fn features_and_config_space() {
        let rw = Block::new(&image("features-rw", false, None).disk);
        let ro = Block::new(&image("features-ro", true, None).disk);
        for block in [&rw, &ro] {
            let f = block.device_features();
            assert_ne!(f & VIRTIO_F_VERSION_1, 0);
            assert_ne!(f & bit(VIRTIO_BLK_F_FLUSH), 0);
            assert_ne!(f & bit(VIRTIO_BLK_F_SEG_MAX), 0);
        }
        assert_eq!(rw.device_features() & bit(VIRTIO_BLK_F_RO), 0);
        assert_ne!(ro.device_features() & bit(VIRTIO_BLK_F_RO), 0);
        assert_ne!(rw.device_features() & bit(VIRTIO_BLK_F_DISCARD), 0);
        assert_eq!(ro.device_features() & bit(VIRTIO_BLK_F_WRITE_ZEROES), 0);
        let mut capacity = [0u8; 8];
        rw.read_config(0, &mut capacity);
        assert_eq!(u64::from_le_bytes(capacity), SECTORS);
        let mut word = [0u8; 4];
        rw.read_config(12, &mut word);
        assert_eq!(u32::from_le_bytes(word), SEG_MAX);
        rw.read_config(20, &mut word);
        assert_eq!(u32::from_le_bytes(word), 512);
        let mut beyond = [0xffu8; 4];
        rw.read_config(0x1000, &mut beyond);
        assert_eq!(
            beyond, [0xff; 4],
            "reads past the config space leave the buffer alone"
        );
    }

    fn capacity(block: &Block) -> u64 {
        let mut bytes = [0u8; 8];
        block.read_config(0, &mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// Runs a read of sector 1, a GET_ID and a flush on `slot`; returns their status bytes,
    /// the sector read and the ID.
    fn probe_slot(slot: &Arc<DiskSlot>) -> ([u8; 3], Vec<u8>, [u8; 20]) {
        let mem = memory();
        header(&mem, HEADER, VIRTIO_BLK_T_IN, 1);
        header(&mem, HEADER + 0x100, VIRTIO_BLK_T_GET_ID, 0);
        header(&mem, HEADER + 0x200, VIRTIO_BLK_T_FLUSH, 0);
        mem.write_slice(&[0xffu8; 20], GuestAddress(DATA + 0x1000))
            .unwrap();
        let (lens, irq) = run_slot(
            &mem,
            slot,
            &[
                &[(HEADER, 16, R), (DATA, 512, W), (STATUS, 1, W)],
                &[
                    (HEADER + 0x100, 16, R),
                    (DATA + 0x1000, 20, W),
                    (STATUS + 1, 1, W),
                ],
                &[(HEADER + 0x200, 16, R), (STATUS + 2, 1, W)],
            ],
        );
        assert_eq!(lens.len(), 3);
        assert!(!irq.is_broken());
        let statuses = [0, 1, 2].map(|i| status(&mem, STATUS + i));
        let mut sector = vec![0u8; 512];
        mem.read_slice(&mut sector, GuestAddress(DATA)).unwrap();
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(DATA + 0x1000))
            .unwrap();
        (statuses, sector, id)
    }

    #[test]
    fn a_disk_slot_is_empty_until_attached_and_after_detach() {
        let block = Block::empty_slot();
        assert_ne!(block.device_features() & bit(VIRTIO_BLK_F_RO), 0);
        assert_eq!(block.device_features() & bit(VIRTIO_BLK_F_DISCARD), 0);
        let slot = block.slot();
        let interrupt = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
        slot.activated(Arc::clone(&interrupt));
        assert_eq!((capacity(&block), block.config_generation()), (0, 0));
        let (statuses, _, id) = probe_slot(&slot);
        assert_eq!(statuses, [IOERR, 0, IOERR], "empty: no data, an empty ID");
        assert_eq!(id, [0u8; 20]);

        let img = image("slot", true, None);
        let file = std::fs::File::open(&img.disk.path).unwrap();
        let backing = Backing::read_only_image(file, "layer-7").unwrap();
        assert_eq!(slot.attach(backing).unwrap(), SECTORS);
        assert_eq!((capacity(&block), block.config_generation()), (SECTORS, 1));
        assert_eq!(interrupt.status(), VIRTIO_MMIO_INT_CONFIG);
        let (statuses, sector, id) = probe_slot(&slot);
        assert_eq!(statuses, [0, 0, 0]);
        assert_eq!(sector, (512..1024).map(pattern).collect::<Vec<_>>());
        assert_eq!(&id, b"layer-7\0\0\0\0\0\0\0\0\0\0\0\0\0");

        interrupt.ack(VIRTIO_MMIO_INT_CONFIG);
        slot.detach().unwrap();
        assert_eq!((capacity(&block), block.config_generation()), (0, 2));
        assert_eq!(interrupt.status(), VIRTIO_MMIO_INT_CONFIG);
        let (statuses, _, id) = probe_slot(&slot);
        assert_eq!(statuses, [IOERR, 0, IOERR]);
        assert_eq!(id, [0u8; 20]);
    }

    #[test]
    fn reads_sectors_into_split_buffers() {
        let img = image("read", true, None);
        let mem = memory();
        header(&mem, HEADER, VIRTIO_BLK_T_IN, 1);
        let (lens, irq) = run(
            &mem,
            &img.disk,
            &[&[
                (HEADER, 16, R),
                (DATA, 512, W),
                (DATA + 0x1000, 512, W),
                (STATUS, 1, W),
            ]],
        );
        assert_eq!(lens, [1025]);
        assert_eq!(status(&mem, STATUS), 0);
        let mut got = vec![0u8; 512];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, (512..1024).map(pattern).collect::<Vec<_>>());
        mem.read_slice(&mut got, GuestAddress(DATA + 0x1000))
            .unwrap();
        assert_eq!(got, (1024..1536).map(pattern).collect::<Vec<_>>());
        assert_eq!(irq.status(), 1);
    }

    #[test]
    fn header_data_and_status_may_share_descriptors() {
        let img = image("framing", true, None);
        let mem = memory();
        header(&mem, HEADER, VIRTIO_BLK_T_IN, 2);
        // One writable descriptor holding the data and the status byte.
        let (lens, _) = run(&mem, &img.disk, &[&[(HEADER, 16, R), (DATA, 513, W)]]);
        assert_eq!(lens, [513]);
        assert_eq!(status(&mem, DATA + 512), 0);
        let mut got = vec![0u8; 512];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, (1024..1536).map(pattern).collect::<Vec<_>>());
    }

    #[test]
    fn header_may_be_split_and_share_a_descriptor_with_write_data() {
        let img = image("split-header", false, None);
        let mem = memory();
        // Header in two pieces, the second followed by the data in the same buffer.
        let mut bytes = vec![0u8; 16 + 512];
        bytes[..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
        bytes[8..16].copy_from_slice(&9u64.to_le_bytes());
        bytes[16..].fill(0xcd);
        mem.write_slice(&bytes[..5], GuestAddress(HEADER)).unwrap();
        mem.write_slice(&bytes[5..], GuestAddress(DATA)).unwrap();
        let (lens, _) = run(
            &mem,
            &img.disk,
            &[&[(HEADER, 5, R), (DATA, 11 + 512, R), (STATUS, 1, W)]],
        );
        assert_eq!(lens, [1]);
        assert_eq!(status(&mem, STATUS), 0);
        let file = file_bytes(&img.disk.path);
        assert!(file[9 * 512..10 * 512].iter().all(|&b| b == 0xcd));
        assert_eq!(file[10 * 512], pattern(10 * 512));
    }

    #[test]
    fn writes_reach_the_file_and_flush_succeeds() {
        let img = image("write", false, None);
        let mem = memory();
        header(&mem, HEADER, VIRTIO_BLK_T_OUT, 3);
        mem.write_slice(&[0xabu8; 1024], GuestAddress(DATA))
            .unwrap();
        header(&mem, HEADER + 0x100, VIRTIO_BLK_T_FLUSH, 0);
        let (lens, _) = run(
            &mem,
            &img.disk,
            &[
                &[(HEADER, 16, R), (DATA, 1024, R), (STATUS, 1, W)],
                &[(HEADER + 0x100, 16, R), (STATUS + 1, 1, W)],
            ],
        );
        assert_eq!(lens, [1, 1]);
        assert_eq!((status(&mem, STATUS), status(&mem, STATUS + 1)), (0, 0));
        let bytes = file_bytes(&img.disk.path);
        assert!(bytes[3 * 512..5 * 512].iter().all(|&b| b == 0xab));
        assert_eq!(bytes[5 * 512], pattern(5 * 512));
    }

    #[test]
    fn read_only_disk_refuses_writes() {
        let img = image("ro", true, None);
        let mem = memory();
        header(&mem, HEADER, VIRTIO_BLK_T_OUT, 0);
        header(&mem, HEADER + 0x100, VIRTIO_BLK_T_WRITE_ZEROES, 0);
        let mut segment = [0u8; 16];
        segment[8..12].copy_from_slice(&1u32.to_le_bytes());
        mem.write_slice(&segment, GuestAddress(DATA + 0x1000))
            .unwrap();
        let (lens, _) = run(
            &mem,
            &img.disk,
            &[
                &[(HEADER, 16, R), (DATA, 512, R), (STATUS, 1, W)],
                &[
                    (HEADER + 0x100, 16, R),
                    (DATA + 0x1000, 16, R),
                    (STATUS + 1, 1, W),
                ],
            ],
        );
        assert_eq!(lens, [1, 1]);
        assert_eq!(
            (status(&mem, STATUS), status(&mem, STATUS + 1)),
            (IOERR, IOERR)
        );
        assert_eq!(
            file_bytes(&img.disk.path)[..512],
            (0..512).map(pattern).collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn get_id_returns_the_serial_padded() {
        let img = image("id", true, Some("layer0"));
        let mem = memory();
        header(&mem, HEADER, VIRTIO_BLK_T_GET_ID, 0);
        mem.write_slice(&[0xffu8; 20], GuestAddress(DATA)).unwrap();
        let (lens, _) = run(
            &mem,
            &img.disk,
            &[
                &[(HEADER, 16, R), (DATA, 20, W), (STATUS, 1, W)],
                &[(HEADER, 16, R), (DATA + 0x100, 4, W), (STATUS + 1, 1, W)],
            ],
        );
        assert_eq!(lens, [21, 5]);
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"layer0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        let mut short = [0u8; 4];
        mem.read_slice(&mut short, GuestAddress(DATA + 0x100))
            .unwrap();
        assert_eq!(&short, b"laye");
        assert_eq!((status(&mem, STATUS), status(&mem, STATUS + 1)), (0, 0));

        let anonymous = image("id-none", true, None);
        mem.write_slice(&[0xffu8; 20], GuestAddress(DATA)).unwrap();
        let (lens, _) = run(
            &mem,
            &anonymous.disk,
            &[&[(HEADER, 16, R), (DATA, 20, W), (STATUS, 1, W)]],
        );
        assert_eq!(lens, [21]);
        mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(id, [0u8; 20]);
    }

    #[test]
    fn discard_and_write_zeroes_zero_the_range() {
        let img = image("discard", false, None);
        let mem = memory();
        let segment = |addr: u64, sector: u64, sectors: u32, flags: u32| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&sector.to_le_bytes());
            bytes[8..12].copy_from_slice(&sectors.to_le_bytes());
            bytes[12..].copy_from_slice(&flags.to_le_bytes());
            mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
        };
        header(&mem, HEADER, VIRTIO_BLK_T_WRITE_ZEROES, 0);
        header(&mem, HEADER + 0x100, VIRTIO_BLK_T_DISCARD, 0);
        segment(DATA, 8, 8, 0);
        segment(DATA + 0x100, 16, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
        segment(DATA + 0x200, 24, 8, 0);
        segment(DATA + 0x300, 32, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP); // not allowed on discard
        segment(DATA + 0x400, SECTORS - 1, 2, 0); // beyond the end
        let (lens, _) = run(
            &mem,
            &img.disk,
            &[
                &[(HEADER, 16, R), (DATA, 16, R), (STATUS, 1, W)],
                &[(HEADER, 16, R), (DATA + 0x100, 16, R), (STATUS + 1, 1, W)],
                &[
                    (HEADER + 0x100, 16, R),
                    (DATA + 0x200, 16, R),
                    (STATUS + 2, 1, W),
                ],
                &[
                    (HEADER + 0x100, 16, R),
                    (DATA + 0x300, 16, R),
                    (STATUS + 3, 1, W),
                ],
                &[(HEADER, 16, R), (DATA + 0x400, 16, R), (STATUS + 4, 1, W)],
                &[(HEADER, 16, R), (DATA, 32, R), (STATUS + 5, 1, W)], // two segments: more than allowed
            ],
        );
        assert_eq!(lens, [1; 6]);
        let statuses: Vec<u8> = (0..6).map(|i| status(&mem, STATUS + i)).collect();
        assert_eq!(statuses, [0, 0, 0, UNSUPP, IOERR, IOERR]);
        let bytes = file_bytes(&img.disk.path);
        assert!(
            bytes[8 * 512..24 * 512].iter().all(|&b| b == 0),
            "write-zeroes ranges read back as zeroes"
        );
        assert_eq!(bytes[7 * 512 + 1], pattern(7 * 512 + 1));
        assert_eq!(bytes[32 * 512 + 1], pattern(32 * 512 + 1));
        assert_eq!(
            bytes.len(),
            SECTORS as usize * 512,
            "the file keeps its size"
        );
    }

    #[test]
    fn bad_requests_get_an_error_status() {
        let img = image("bad", false, None);
        let mem = memory();
        header(&mem, HEADER, VIRTIO_BLK_T_IN, SECTORS - 1); // 2 sectors: 1 beyond the end
        header(&mem, HEADER + 0x100, VIRTIO_BLK_T_IN, u64::MAX); // overflows
        header(&mem, HEADER + 0x200, 99, 0); // unknown type
        header(&mem, HEADER + 0x300, VIRTIO_BLK_T_OUT, 0);
        header(&mem, HEADER + 0x400, VIRTIO_BLK_T_IN, 0);
        let chains: &[&[(u64, u32, bool)]] = &[
            &[(HEADER, 16, R), (DATA, 1024, W), (STATUS, 1, W)],
            &[(HEADER + 0x100, 16, R), (DATA, 512, W), (STATUS + 1, 1, W)],
            &[(HEADER + 0x200, 16, R), (STATUS + 2, 1, W)],
            // Not a multiple of 512.
            &[(HEADER + 0x300, 16, R), (DATA, 100, R), (STATUS + 3, 1, W)],
            // A read whose data buffer is device-readable.
            &[(HEADER + 0x400, 16, R), (DATA, 512, R), (STATUS + 4, 1, W)],
            // A readable descriptor after a writable one.
            &[
                (HEADER + 0x400, 16, R),
                (DATA, 512, W),
                (DATA + 0x1000, 512, R),
                (STATUS + 5, 1, W),
            ],
            // A short header.
            &[(HEADER, 8, R), (STATUS + 6, 1, W)],
            // Data outside guest memory.
            &[
                (HEADER + 0x400, 16, R),
                (0xf_ff00, 512, W),
                (STATUS + 7, 1, W),
            ],
            // Huge data, far beyond guest memory and the disk.
            &[
                (HEADER + 0x400, 16, R),
                (DATA, 0xffff_fe00, W),
                (STATUS + 8, 1, W),
            ],
            // A write with writable data.
            &[(HEADER + 0x300, 16, R), (DATA, 512, W), (STATUS + 9, 1, W)],
        ];
        let (lens, irq) = run(&mem, &img.disk, chains);
        assert_eq!(lens, [1; 10]);
        let statuses: Vec<u8> = (0..10).map(|i| status(&mem, STATUS + i)).collect();
        assert_eq!(
            statuses,
            [IOERR, IOERR, UNSUPP, IOERR, IOERR, IOERR, IOERR, IOERR, IOERR, IOERR]
        );
        assert!(!irq.is_broken());
        assert_eq!(
            file_bytes(&img.disk.path)[..512],
            (0..512).map(pattern).collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn chains_without_a_status_byte_get_len_0() {
        let img = image("nostatus", false, None);
        let mem = memory();
        header(&mem, HEADER, VIRTIO_BLK_T_FLUSH, 0);
        mem.write_obj(0x55u8, GuestAddress(STATUS)).unwrap();
        let (lens, irq) = run(
            &mem,
            &img.disk,
            &[
                // The last descriptor is device-readable.
                &[(HEADER, 16, R), (STATUS, 1, R)],
                // The status byte is outside guest memory.
                &[(HEADER, 16, R), (0x10_0000, 1, W)],
                // An empty last descriptor.
                &[(HEADER, 16, R), (STATUS, 0, W)],
                // Header only.
                &[(HEADER, 16, R)],
            ],
        );
        assert_eq!(lens, [0; 4]);
        assert_eq!(status(&mem, STATUS), 0x55, "nothing written");
        assert!(!irq.is_broken());
    }

    #[test]
    fn descriptor_loops_and_oversized_indirect_tables_end() {
        let img = image("loops", false, None);
        let mem = memory();
        header(&mem, HEADER, VIRTIO_BLK_T_IN, 0);
        let vq = MockSplitQueue::new(&mem, 16);
        // Chain 0: 0 -> 1 -> 0 -> ... (a loop), all writable.
        let looping = [
            RawDescriptor::from(SplitDescriptor::new(
                DATA,
                512,
                (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
                1,
            )),
            RawDescriptor::from(SplitDescriptor::new(
                DATA,
                512,
                (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
                0,
            )),
        ];
        vq.desc_table().store(0, looping[0]).unwrap();
        vq.desc_table().store(1, looping[1]).unwrap();
        // Chain 2: an indirect table of 300 descriptors (more than MAX_DESCRIPTORS).
        let table = 0x8_0000u64;
        for i in 0..300u16 {
            let (addr, len, flags) = match i {
                0 => (HEADER, 16, VRING_DESC_F_NEXT as u16),
                299 => (STATUS, 1, VRING_DESC_F_WRITE as u16),
                _ => (DATA, 512, (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16),
            };
            let desc = SplitDescriptor::new(addr, len, flags, i + 1);
            mem.write_obj(desc, GuestAddress(table + u64::from(i) * 16))
                .unwrap();
        }
        vq.desc_table()
            .store(
                2,
                RawDescriptor::from(SplitDescriptor::new(
                    table,
                    300 * 16,
                    VRING_DESC_F_INDIRECT as u16,
                    0,
                )),
            )
            .unwrap();
        // Chain 3: a head index outside the table would break the ring; it is not used here.
        let avail = vq.avail();
        avail.ring().ref_at(0).unwrap().store(0);
        avail.ring().ref_at(1).unwrap().store(2);
        avail.idx().store(2);
        mem.write_obj(0x55u8, GuestAddress(STATUS)).unwrap();
        let irq = run_queue(&mem, &img.disk, &vq);
        let used = vq.used();
        assert_eq!(used.idx().load(), 2);
        // The loop has no readable header: IOERR into its last (writable) byte.
        assert_eq!(used.ring().ref_at(0).unwrap().load().len(), 1);
        assert_eq!(used.ring().ref_at(1).unwrap().load().len(), 1);
        assert_eq!(status(&mem, STATUS), IOERR, "too many descriptors");
        assert!(!irq.is_broken());
    }

    #[test]
    fn a_corrupt_ring_breaks_the_device() {
        let img = image("corrupt", false, None);
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, 16);
        // The driver claims 100 new chains in a 16-entry ring.
        vq.avail().idx().store(100);
        let irq = run_queue(&mem, &img.disk, &vq);
        assert!(irq.is_broken());

        let vq = MockSplitQueue::new(&mem, 16);
        // A head index beyond the queue cannot be returned.
        vq.avail().ring().ref_at(0).unwrap().store(40);
        vq.avail().idx().store(1);
        let irq = run_queue(&mem, &img.disk, &vq);
        assert!(irq.is_broken());
    }
}
