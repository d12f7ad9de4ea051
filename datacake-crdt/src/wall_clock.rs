//! The wall clock in milliseconds, cheap enough to read on every stamp.
//!
//! Reading the system clock costs 20-40 ns (a vDSO `clock_gettime`), which alone would cap
//! [`HLCTimestamp::send`](crate::HLCTimestamp::send) below 30 million stamps a second. On
//! x86_64 each thread therefore remembers its last reading together with the CPU's time-stamp
//! counter (`rdtsc`, a few ns) and reuses the reading while fewer than [`WINDOW_CYCLES`]
//! cycles have passed: the millisecond returned lags the true one by at most that window
//! (20 µs on a 1 GHz counter, less on faster ones), far below the clock's millisecond
//! resolution. Any jump of the counter (another core, a suspend) that makes it look older or
//! much newer simply forces a fresh reading. On other architectures every call reads the
//! system clock.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::timestamp::MAX_MILLIS;

/// How many time-stamp-counter cycles a reading is reused for.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const WINDOW_CYCLES: u64 = 20_000;

/// The wall clock in milliseconds since the UNIX epoch: 0 if the system clock is before the
/// epoch, [`MAX_MILLIS`] if past the range. May lag the system clock by up to 20 µs (see the
/// module docs of `wall_clock.rs`: on x86_64 a reading is reused for 20,000 TSC cycles).
pub fn wall_clock_millis() -> u64 {
    cached::millis()
}

/// Reads the system clock, uncached.
pub(crate) fn system_millis() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(d.subsec_millis()))
            .min(MAX_MILLIS),
        Err(_) => 0,
    }
}

#[cfg(target_arch = "x86_64")]
mod cached {
    use std::cell::Cell;

    thread_local! {
        /// `(tsc, millis)` of this thread's last system-clock reading; `millis == 0` means
        /// none yet.
        static LAST: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }

    pub(super) fn millis() -> u64 {
        // SAFETY: `rdtsc` has no preconditions and exists on every x86_64 CPU.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        LAST.try_with(|last| {
            let (at, millis) = last.get();
            if millis != 0 && tsc.wrapping_sub(at) < super::WINDOW_CYCLES {
                return millis;
            }
            let millis = super::system_millis();
            last.set((tsc, millis));
            millis
        })
        // The thread is shutting down and its locals are gone: read the clock directly.
        .unwrap_or_else(|_| super::system_millis())
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod cached {
    pub(super) fn millis() -> u64 {
        super::system_millis()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_system_clock() {
        let before = system_millis();
        let cached = wall_clock_millis();
        let after = system_millis();
        assert!(before > 1_600_000_000_000);
        // The cached reading may be up to a few microseconds old: at most one ms behind.
        assert!(
            cached + 1 >= before && cached <= after,
            "{before} {cached} {after}"
        );
        // It advances: wait for the system clock to move two milliseconds on.
        let start = system_millis();
        while system_millis() < start + 2 {
            std::hint::spin_loop();
        }
        assert!(wall_clock_millis() > start);
    }

    #[test]
    fn works_in_thread_local_destructors() {
        struct ReadsOnDrop;
        impl Drop for ReadsOnDrop {
            fn drop(&mut self) {
                assert!(wall_clock_millis() > 0);
            }
        }
        thread_local! {
            static GUARD: ReadsOnDrop = const { ReadsOnDrop };
        }
        std::thread::spawn(|| GUARD.with(|_| ())).join().unwrap();
    }
}
