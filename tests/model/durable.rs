//! Where the models' brokers live: memory, or a durable store on the simulated disk of
//! `tests/common/power.rs` that can be closed and reopened, or cut off by a power loss; and the
//! figures a run prints.

use std::cell::RefCell;

use super::power::{CrashBackend, Op, Rng, landed_image, torn_image};
use super::*;

/// Names the store in errors (nothing is written there: the bytes live in a [`CrashBackend`]).
const PATH: &str = "model.embus";

/// How a case stores its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// `Broker::builder().clock(..).open()`: nothing stored; `Reopen` and `Kill` do nothing.
    Memory,
    /// A durable store: `Reopen` closes the broker and opens the same bytes again; `Kill`
    /// does the same (a kill needs the crash mode).
    Durable,
    /// A durable store where `Kill` cuts the power: what was synced survives, and of what was
    /// written since, a torn variant keeps some.
    Crash,
}

/// Memory cases, reopen-only cases and crash cases, 2:1:1.
pub(super) fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![2 => Just(Mode::Memory), 1 => Just(Mode::Durable), 1 => Just(Mode::Crash)]
}

/// The broker's storage, kept across reopens.
#[derive(Debug)]
pub(super) struct Storage {
    pub(super) mode: Mode,
    clock: ManualClock,
    /// The simulated disk (durable modes).
    disk: Option<CrashBackend>,
}

impl Storage {
    pub(super) fn new(mode: Mode, clock: ManualClock) -> Self {
        let disk = (mode != Mode::Memory).then(|| CrashBackend::frozen_after(None));
        Self { mode, clock, disk }
    }

    pub(super) fn durable(&self) -> bool {
        self.mode != Mode::Memory
    }

    /// Opens a broker on the storage (memory: a new one).
    pub(super) fn open(&self) -> Broker {
        let builder = Broker::builder().clock(self.clock.clone());
        match &self.disk {
            Some(disk) => builder.path(PATH).storage_backend(disk.clone()).open(),
            None => builder.open(),
        }
        .unwrap_or_else(|e| panic!("opening the model's broker: {e}"))
    }

    /// The power goes now: the disk keeps what was synced (`torn: None`), or a variant of that
    /// with some of what was written since, chosen by `seed % 4`: a torn image
    /// (`tests/common/power.rs`: 0, the last write torn in half; 1 and 2, each write whole, in
    /// part or not at all, drawn with `seed`) or 3, every write whole; and the next
    /// [`open`](Self::open) reads that. After a [`freeze_in`](Self::freeze_in), "synced" means
    /// up to there. Call it before dropping anything of the old broker (which goes on writing
    /// to the old disk, now disconnected).
    pub(super) fn cut_power(&mut self, torn: Option<u64>) {
        let disk = self.disk.as_ref().expect("a power cut needs a disk");
        let (durable, unsynced) = disk.crash_image();
        let image = match torn {
            Some(seed) => {
                let writes = unsynced.iter().any(|op| matches!(op, Op::Write { .. }));
                bump(|f| {
                    f.torn += 1;
                    f.torn_writes += u64::from(writes);
                });
                match seed % 4 {
                    3 => landed_image(&durable, &unsynced),
                    variant => torn_image(&durable, &unsynced, variant, &mut Rng(seed)),
                }
            }
            None => durable,
        };
        self.disk = Some(CrashBackend::from_image(image));
        bump(|f| f.kills += 1);
    }

    /// The disk stops keeping what is written after `syncs` more syncs
    /// ([`CrashBackend::freeze_in`]): a [`cut_power`](Self::cut_power) after a commit that
    /// began since finds what it wrote up to there (and, torn, some of what came next).
    pub(super) fn freeze_in(&self, syncs: u8) {
        let disk = self.disk.as_ref().expect("a power cut needs a disk");
        disk.freeze_in(u64::from(syncs));
    }
}

/// A power cut's torn variant: none (only what was synced) in half the kills, else a seed.
pub(super) fn torn() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), any::<u64>().prop_map(Some)]
}

/// What a property did over all its cases (shrinking included), printed when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Figures {
    pub(super) cases: u64,
    pub(super) durable: u64,
    pub(super) steps: u64,
    pub(super) reopens: u64,
    pub(super) kills: u64,
    /// Kills that reopened a variant of the disk with some unsynced writes ...
    pub(super) torn: u64,
    /// ... with unsynced writes to tear (else it is the synced image).
    pub(super) torn_writes: u64,
    /// Kills while a commit was under way (the transaction model: a transaction's; the queue
    /// model: a send's) ...
    pub(super) mid_commit: u64,
    /// ... that found it stored (whole; else it is absent, whole).
    pub(super) mid_commit_kept: u64,
    /// Messages whose presence (or absence) and contents were checked after a reopen or kill.
    pub(super) checked: u64,
}

thread_local! {
    static FIGURES: RefCell<Figures> = RefCell::new(Figures::default());
}

/// Updates this thread's figures (each property runs on its own test thread).
pub(super) fn bump(f: impl FnOnce(&mut Figures)) {
    FIGURES.with(|figures| f(&mut figures.borrow_mut()));
}

/// This thread's figures so far.
pub(super) fn figures() -> Figures {
    FIGURES.with(|figures| *figures.borrow())
}
