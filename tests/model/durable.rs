//! Where the models' brokers live: memory, or a durable store on the simulated disk of
//! `tests/common/power.rs` that can be closed and reopened, or cut off by a power loss; and the
//! figures a run prints.

use std::cell::RefCell;

use super::power::CrashBackend;
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
    /// A durable store where `Kill` cuts the power: only what was synced survives.
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

    /// The power goes now: the disk keeps what was synced, and the next [`open`](Self::open)
    /// reads that. Call it before dropping anything of the old broker (which goes on writing
    /// to the old disk, now disconnected).
    pub(super) fn cut_power(&mut self) {
        let disk = self.disk.as_ref().expect("a power cut needs a disk");
        let (durable, _) = disk.crash_image();
        self.disk = Some(CrashBackend::from_image(durable));
        bump(|f| f.kills += 1);
    }
}

/// What a property did over all its cases (shrinking included), printed when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Figures {
    pub(super) cases: u64,
    pub(super) durable: u64,
    pub(super) steps: u64,
    pub(super) reopens: u64,
    pub(super) kills: u64,
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
