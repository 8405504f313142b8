//! Simulated power loss, for `tests/power_loss.rs`, `tests/power_loss_tx.rs` and the model
//! tests' crash mode (`tests/model/durable.rs`): an in-memory redb backend ([`CrashBackend`])
//! whose durable image stops advancing after a chosen sync (or a number of syncs from now,
//! [`CrashBackend::freeze_in`]), the torn variants of a crash image, the
//! `EMBUS_POWER_LOSS_TORN` setting, and a runner that turns a panic or a hang into an error
//! ([`guarded`]).

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use embus::redb::StorageBackend;

/// How long one workload run or one reopen may take before it counts as hung.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A mutating operation issued after the last sync of the durable image.
#[derive(Debug, Clone)]
pub enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Default)]
pub struct State {
    /// Every write and set_len applied: what the broker reads.
    live: Vec<u8>,
    /// `live` as of the last sync before the power cut.
    durable: Vec<u8>,
    /// `sync_data` calls so far.
    syncs: u64,
    /// The power is cut after this sync: `durable` no longer advances.
    freeze_after: Option<u64>,
    /// Operations issued after sync `freeze_after` and before the next sync; never frozen:
    /// those issued since the last sync.
    unsynced: Vec<Op>,
}

/// An in-memory redb backend that can lose unsynced writes; clones share the same storage.
#[derive(Clone, Default)]
pub struct CrashBackend(Arc<Mutex<State>>);

// By hand: the derived impl would print every byte.
impl fmt::Debug for CrashBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("CrashBackend")
            .field("live", &state.live.len())
            .field("durable", &state.durable.len())
            .field("syncs", &state.syncs)
            .field("freeze_after", &state.freeze_after)
            .finish()
    }
}

impl CrashBackend {
    /// A backend whose power is cut after sync `k` (`None`: never).
    pub fn frozen_after(k: Option<u64>) -> Self {
        let backend = Self::default();
        backend.state().freeze_after = k;
        backend
    }

    /// A backend holding `image`, as found after a reboot.
    pub fn from_image(image: Vec<u8>) -> Self {
        let backend = Self::default();
        {
            let mut state = backend.state();
            state.durable.clone_from(&image);
            state.live = image;
        }
        backend
    }

    /// Cuts the power after `more` syncs from now, as far as the disk is concerned: the
    /// durable image stops there, and what is issued after it, until the next sync, may or may
    /// not reach it ([`crash_image`](Self::crash_image)); the backend goes on serving its
    /// broker.
    pub fn freeze_in(&self, more: u64) {
        let mut state = self.state();
        state.freeze_after = Some(state.syncs + more);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// What the disk holds after the power cut: the durable image, and the operations issued
    /// after it that may or may not have reached the disk, in order.
    pub fn crash_image(&self) -> (Vec<u8>, Vec<Op>) {
        let state = self.state();
        (state.durable.clone(), state.unsynced.clone())
    }

    /// Records `op` if it was issued between the freeze point and the next sync (never
    /// frozen: since the last sync).
    fn issued(state: &mut State, op: impl FnOnce() -> Op) {
        if state.freeze_after.is_none_or(|k| k == state.syncs) {
            state.unsynced.push(op());
        }
    }
}

pub fn out_of_range(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: out of range"))
}

impl StorageBackend for CrashBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let state = self.state();
        let start = usize::try_from(offset).map_err(|_| out_of_range("read"))?;
        let source = start
            .checked_add(out.len())
            .and_then(|end| state.live.get(start..end))
            .ok_or_else(|| out_of_range("read"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.state();
        let n = usize::try_from(len).map_err(|_| out_of_range("set_len"))?;
        state.live.resize(n, 0);
        Self::issued(&mut state, || Op::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut state = self.state();
        state.syncs += 1;
        if state.freeze_after.is_none_or(|k| state.syncs <= k) {
            let State {
                live,
                durable,
                unsynced,
                ..
            } = &mut *state;
            durable.clone_from(live);
            unsynced.clear();
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.state();
        let start = usize::try_from(offset).map_err(|_| out_of_range("write"))?;
        let target = start
            .checked_add(data.len())
            .and_then(|end| state.live.get_mut(start..end))
            .ok_or_else(|| out_of_range("write"))?;
        target.copy_from_slice(data);
        Self::issued(&mut state, || Op::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Torn images
// ---------------------------------------------------------------------------------------------

/// splitmix64: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Applies bytes `data[from..to]` of a write at `offset` to `image`, growing it if needed.
pub fn apply_part(image: &mut Vec<u8>, offset: u64, data: &[u8], from: usize, to: usize) {
    if from >= to {
        return;
    }
    let start = offset as usize + from;
    let end = offset as usize + to;
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(&data[from..to]);
}

/// Variant 0: every unsynced operation reached the disk but the last write, torn in half.
/// Others: each operation reached the disk or not at random, some writes only in part (a
/// random contiguous part: single bytes are atomic, and nothing outside the range changes).
pub fn torn_image(durable: &[u8], unsynced: &[Op], variant: u64, rng: &mut Rng) -> Vec<u8> {
    let mut image = durable.to_vec();
    let last_write = unsynced
        .iter()
        .rposition(|op| matches!(op, Op::Write { .. }));
    for (i, op) in unsynced.iter().enumerate() {
        match op {
            Op::SetLen(len) => {
                if variant == 0 || rng.below(2) == 0 {
                    image.resize(*len as usize, 0);
                }
            }
            Op::Write { offset, data } if variant == 0 => {
                let to = if Some(i) == last_write {
                    data.len() / 2
                } else {
                    data.len()
                };
                apply_part(&mut image, *offset, data, 0, to);
            }
            Op::Write { offset, data } => match rng.below(6) {
                0 | 1 => {}
                2 | 3 => apply_part(&mut image, *offset, data, 0, data.len()),
                4 => apply_part(&mut image, *offset, data, 0, data.len() / 2),
                _ => {
                    let a = rng.below(data.len() + 1);
                    let b = rng.below(data.len() + 1);
                    apply_part(&mut image, *offset, data, a.min(b), a.max(b));
                }
            },
        }
    }
    image
}

/// Every unsynced operation reached the disk, whole: the power went as the sync was under way.
pub fn landed_image(durable: &[u8], unsynced: &[Op]) -> Vec<u8> {
    let mut image = durable.to_vec();
    for op in unsynced {
        match op {
            Op::SetLen(len) => image.resize(*len as usize, 0),
            Op::Write { offset, data } => apply_part(&mut image, *offset, data, 0, data.len()),
        }
    }
    image
}

/// `EMBUS_POWER_LOSS_TORN=<variants>[,<seed>]`.
pub fn torn_settings() -> (u64, u64) {
    let (mut variants, mut seed) = (3, 0x5EED_0FB0_5E5A);
    if let Ok(value) = std::env::var("EMBUS_POWER_LOSS_TORN") {
        let mut parts = value.split(',').map(str::trim);
        if let Some(v) = parts.next().filter(|v| !v.is_empty()) {
            variants = v
                .parse()
                .unwrap_or_else(|_| panic!("EMBUS_POWER_LOSS_TORN: bad variant count {v:?}"));
        }
        if let Some(s) = parts.next() {
            seed = s
                .parse()
                .unwrap_or_else(|_| panic!("EMBUS_POWER_LOSS_TORN: bad seed {s:?}"));
        }
    }
    (variants, seed)
}

/// Runs `f` on its own thread: `Err` if it panics or takes longer than [`LIMIT`].
pub fn guarded<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(LIMIT) {
        Ok(Ok(r)) => {
            let _ = handle.join();
            Ok(r)
        }
        Ok(Err(panic)) => {
            let _ = handle.join();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(not a string)".to_owned());
            Err(format!("panicked: {message}"))
        }
        Err(_) => Err(format!("still running after {LIMIT:?} (hung)")),
    }
}
