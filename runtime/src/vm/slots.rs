//! Disk-slot bookkeeping of one pod VM: which slot holds which layer (by serial), and which
//! containers use it, so a layer shared by two containers is attached once and its slot is
//! freed only when the last of them is deleted. Pure: [`super::pod`] does the attaching.

use std::collections::{BTreeSet, HashMap};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SlotError {
    #[error(
        "the pod's {total} disk slots are all in use; container {container:?} needs {needed} more"
    )]
    Full {
        container: String,
        needed: usize,
        total: u32,
    },
}

/// A layer that must be attached before the container can be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    pub slot: u32,
    pub serial: String,
}

#[derive(Debug)]
struct Holder {
    serial: String,
    users: BTreeSet<String>,
}

/// The slots of one VM.
#[derive(Debug)]
pub struct Slots {
    total: u32,
    held: HashMap<u32, Holder>,
}

impl Slots {
    /// `total` empty slots, numbered 0 to total - 1.
    pub fn new(total: u32) -> Self {
        Self {
            total,
            held: HashMap::new(),
        }
    }

    fn slot_of(&self, serial: &str) -> Option<u32> {
        self.held
            .iter()
            .find_map(|(slot, holder)| (holder.serial == serial).then_some(*slot))
    }

    fn free(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.total).filter(|slot| !self.held.contains_key(slot))
    }

    /// Reserves slots for `container`'s layer `serials`: layers already attached are shared,
    /// the others get free slots and are returned, to be attached. All or nothing.
    pub fn reserve(
        &mut self,
        container: &str,
        serials: &[String],
    ) -> Result<Vec<Attach>, SlotError> {
        let mut missing: Vec<&String> = Vec::new();
        for serial in serials {
            if self.slot_of(serial).is_none() && !missing.contains(&serial) {
                missing.push(serial);
            }
        }
        let free: Vec<u32> = self.free().take(missing.len()).collect();
        if free.len() < missing.len() {
            return Err(SlotError::Full {
                container: container.to_owned(),
                needed: missing.len() - free.len(),
                total: self.total,
            });
        }
        let attach: Vec<Attach> = free
            .into_iter()
            .zip(missing)
            .map(|(slot, serial)| Attach {
                slot,
                serial: serial.clone(),
            })
            .collect();
        for new in &attach {
            let holder = Holder {
                serial: new.serial.clone(),
                users: BTreeSet::new(),
            };
            self.held.insert(new.slot, holder);
        }
        for serial in serials {
            if let Some(slot) = self.slot_of(serial) {
                if let Some(holder) = self.held.get_mut(&slot) {
                    holder.users.insert(container.to_owned());
                }
            }
        }
        Ok(attach)
    }

    /// Forgets `container`; returns the slots nobody uses any more (ascending), to be detached.
    pub fn release(&mut self, container: &str) -> Vec<u32> {
        let mut freed: Vec<u32> = Vec::new();
        self.held.retain(|slot, holder| {
            holder.users.remove(container);
            let unused = holder.users.is_empty();
            if unused {
                freed.push(*slot);
            }
            !unused
        });
        freed.sort_unstable();
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serials(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn new_layers_get_the_lowest_free_slots() {
        let mut slots = Slots::new(4);
        let attach = slots.reserve("a", &serials(&["base", "top"])).unwrap();
        assert_eq!(
            attach,
            vec![
                Attach {
                    slot: 0,
                    serial: "base".into()
                },
                Attach {
                    slot: 1,
                    serial: "top".into()
                },
            ]
        );
    }

    #[test]
    fn shared_layer_is_attached_once_and_freed_after_its_last_user() {
        let mut slots = Slots::new(4);
        slots.reserve("a", &serials(&["base", "a-top"])).unwrap();
        let attach = slots.reserve("b", &serials(&["base", "b-top"])).unwrap();
        assert_eq!(
            attach,
            vec![Attach {
                slot: 2,
                serial: "b-top".into()
            }]
        );
        assert_eq!(slots.release("a"), vec![1]);
        assert_eq!(slots.release("b"), vec![0, 2]);
        assert_eq!(slots.release("b"), Vec::<u32>::new());
    }

    #[test]
    fn freed_slot_is_reused() {
        let mut slots = Slots::new(2);
        slots.reserve("a", &serials(&["x"])).unwrap();
        slots.reserve("b", &serials(&["y"])).unwrap();
        assert_eq!(slots.release("a"), vec![0]);
        let attach = slots.reserve("c", &serials(&["z"])).unwrap();
        assert_eq!(
            attach,
            vec![Attach {
                slot: 0,
                serial: "z".into()
            }]
        );
    }

    #[test]
    fn full_pod_refuses_and_reserves_nothing() {
        let mut slots = Slots::new(2);
        slots.reserve("a", &serials(&["x"])).unwrap();
        let error = slots.reserve("b", &serials(&["y", "z"])).unwrap_err();
        assert_eq!(
            error,
            SlotError::Full {
                container: "b".into(),
                needed: 1,
                total: 2
            }
        );
        assert!(error.to_string().contains("2 disk slots"));
        assert_eq!(slots.release("b"), Vec::<u32>::new());
        assert_eq!(slots.reserve("c", &serials(&["y"])).unwrap().len(), 1);
    }

    #[test]
    fn repeated_layer_in_one_container_takes_one_slot() {
        let mut slots = Slots::new(2);
        let attach = slots.reserve("a", &serials(&["x", "y", "x"])).unwrap();
        assert_eq!(attach.len(), 2);
        assert_eq!(slots.release("a"), vec![0, 1]);
    }
}
