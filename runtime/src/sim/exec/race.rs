//! Shared-memory race detection between barriers.
//!
//! Two accesses to one shared byte race when they fall in the same barrier interval, come
//! from different threads, at least one writes, they are not both atomic, and they are not
//! the same warp instruction (lanes of one instruction act together). Different
//! instructions of one warp do race: since Volta, a warp's threads are not guaranteed to
//! run in lock step, and only a barrier orders them.
//!
//! Each byte keeps its last writer and up to two reader threads of the current interval.
//! Two distinct readers suffice: a writer can be at most one of them, so any other reader
//! that exists is seen. Cells from an older interval count as empty, so a barrier costs
//! nothing here.

/// One access: which thread, which warp instruction, and the program counter to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Accessor {
    /// Linear thread index in the block.
    pub thread: u32,
    /// Counts warp instructions in the block; equal events mean one instruction.
    pub event: u32,
    pub pc: u32,
}

/// A detected race: what it was and the earlier access it conflicts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Race {
    pub what: &'static str,
    pub other: Accessor,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Thread index + 1; 0 when empty.
    thread: u32,
    event: u32,
    pc: u32,
}

impl Slot {
    fn get(&self) -> Option<Accessor> {
        (self.thread != 0).then(|| Accessor {
            thread: self.thread - 1,
            event: self.event,
            pc: self.pc,
        })
    }

    fn set(a: Accessor) -> Slot {
        Slot {
            thread: a.thread + 1,
            event: a.event,
            pc: a.pc,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Cell {
    interval: u32,
    writer: Slot,
    writer_atomic: bool,
    readers: [Slot; 2],
}

/// Shadow state for one block's shared memory.
#[derive(Default)]
pub(crate) struct RaceDetector {
    cells: Vec<Cell>,
    /// Starts at 1 so that zeroed cells belong to no interval.
    interval: u32,
}

fn conflicts(earlier: Option<Accessor>, now: Accessor) -> Option<Accessor> {
    earlier.filter(|e| e.thread != now.thread && e.event != now.event)
}

impl RaceDetector {
    /// Prepares for a block with `bytes` of shared memory.
    pub fn reset(&mut self, bytes: usize) {
        if self.cells.len() < bytes {
            self.cells.resize(bytes, Cell::default());
        }
        self.barrier();
    }

    /// A barrier completed: every earlier access is now ordered before every later one.
    pub fn barrier(&mut self) {
        self.interval = self.interval.wrapping_add(1);
        if self.interval == 0 {
            // After 2^32 intervals old tags could alias; start over from clean cells.
            self.cells.iter_mut().for_each(|c| *c = Cell::default());
            self.interval = 1;
        }
    }

    fn cell(&mut self, addr: usize) -> &mut Cell {
        let interval = self.interval;
        let cell = &mut self.cells[addr];
        if cell.interval != interval {
            *cell = Cell {
                interval,
                ..Cell::default()
            };
        }
        cell
    }

    pub fn read(&mut self, addr: usize, now: Accessor) -> Result<(), Race> {
        let cell = self.cell(addr);
        if let Some(other) = conflicts(cell.writer.get(), now) {
            return Err(Race {
                what: "read after write",
                other,
            });
        }
        let slot = cell
            .readers
            .iter()
            .position(|r| r.thread == 0 || r.thread == now.thread + 1)
            .unwrap_or(1);
        cell.readers[slot] = Slot::set(now);
        Ok(())
    }

    pub fn write(&mut self, addr: usize, now: Accessor, atomic: bool) -> Result<(), Race> {
        let cell = self.cell(addr);
        if !(atomic && cell.writer_atomic) {
            if let Some(other) = conflicts(cell.writer.get(), now) {
                return Err(Race {
                    what: "write after write",
                    other,
                });
            }
        }
        for reader in cell.readers {
            if let Some(other) = conflicts(reader.get(), now) {
                return Err(Race {
                    what: "write after read",
                    other,
                });
            }
        }
        cell.writer = Slot::set(now);
        cell.writer_atomic = atomic;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(thread: u32, event: u32) -> Accessor {
        Accessor {
            thread,
            event,
            pc: 0,
        }
    }

    fn detector() -> RaceDetector {
        let mut d = RaceDetector::default();
        d.reset(16);
        d
    }

    #[test]
    fn a_barrier_separates_writer_and_reader() {
        let mut d = detector();
        d.write(3, at(0, 1), false).unwrap();
        assert_eq!(d.read(3, at(1, 2)).unwrap_err().what, "read after write");
        d.barrier();
        d.read(3, at(1, 5)).unwrap();
        d.read(3, at(0, 6)).unwrap();
    }

    #[test]
    fn one_warp_instruction_does_not_race_with_itself() {
        let mut d = detector();
        d.write(0, at(0, 7), false).unwrap();
        d.write(0, at(1, 7), false).unwrap();
        assert_eq!(d.write(0, at(2, 8), false).unwrap_err().other, at(1, 7));
    }

    #[test]
    fn any_second_reader_conflicts_with_a_later_writer() {
        let mut d = detector();
        d.read(1, at(0, 1)).unwrap();
        d.read(1, at(1, 2)).unwrap();
        d.read(1, at(2, 3)).unwrap();
        let race = d.write(1, at(0, 4), false).unwrap_err();
        assert_eq!(race.what, "write after read");
        assert_ne!(race.other.thread, 0);
        // The same thread may read and then write its own byte.
        d.read(2, at(5, 1)).unwrap();
        d.write(2, at(5, 2), false).unwrap();
    }

    #[test]
    fn atomics_do_not_race_with_each_other_but_do_with_plain_reads() {
        let mut d = detector();
        d.write(4, at(0, 1), true).unwrap();
        d.write(4, at(1, 2), true).unwrap();
        assert_eq!(d.read(4, at(2, 3)).unwrap_err().what, "read after write");
    }
}
