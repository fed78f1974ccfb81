//! `std::time::Instant` inside a simulation reads simulated time.
//!
//! The code under test takes its time from tokio, whose clock the simulator
//! pauses and advances. Some libraries below it do not: h2 (the HTTP/2 layer
//! of every gRPC connection in a run) stamps a stream it resets with
//! `std::time::Instant::now()` and forgets it once a second of *real*
//! time has passed. Whether a late frame for that stream is then silently
//! dropped or answered with another RST_STREAM depended on how fast the
//! machine ran the simulation, and one extra frame on a simulated connection
//! draws from the network's random stream and changes everything after it:
//! the same seed gave two different traces on a loaded machine (found as a
//! rare failure of `determinism::five_nodes_deterministic_and_safe`; seed 7
//! with 5 nodes diverged in most runs on a machine kept busy, in none with
//! h2's expiry patched out).
//!
//! So, as deterministic simulators commonly do, this crate defines the C
//! library's `clock_gettime` itself. The linker binds every call in the
//! executable (the standard library's `Instant::now` among them) to this
//! definition. On a thread running a simulation ([`enter`]) the monotonic
//! clocks read tokio's simulated time; everywhere else, and for the
//! wall clock (`CLOCK_REALTIME`, `SystemTime`; the code under test takes
//! wall time from [`roster_env::clock::Clock`], simulated per node), the
//! call goes to the kernel unchanged.

use std::cell::Cell;
use std::time::Duration;

/// Where simulated time was anchored to the real monotonic clock on this
/// thread: the kernel's reading and tokio's simulated instant at [`enter`].
#[derive(Clone, Copy)]
struct Anchor {
    real: libc::timespec,
    simulated: tokio::time::Instant,
}

thread_local! {
    /// Set while this thread runs a simulation.
    static ANCHOR: Cell<Option<Anchor>> = const { Cell::new(None) };
}

/// Makes `std::time::Instant::now()` on this thread follow tokio's clock
/// until the guard drops. Call inside the simulation's runtime (its clock
/// paused), on the thread that runs it.
pub fn enter() -> Guard {
    linked();
    let anchor = Anchor {
        real: real_now(libc::CLOCK_MONOTONIC),
        simulated: tokio::time::Instant::now(),
    };
    ANCHOR.with(|a| a.set(Some(anchor)));
    Guard(())
}

/// Ends [`enter`]'s effect on drop.
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        ANCHOR.with(|a| a.set(None));
    }
}

/// The kernel's reading of `clock`.
fn real_now(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_clock_gettime, clock, &mut ts as *mut libc::timespec) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    ts
}

/// The simulated reading of a monotonic clock, if this thread runs a
/// simulation inside its runtime.
fn simulated_now() -> Option<libc::timespec> {
    let anchor = ANCHOR.try_with(Cell::get).ok().flatten()?;
    // Outside the runtime tokio would read the real clock through this very
    // function; a paused runtime's clock never does.
    tokio::runtime::Handle::try_current().ok()?;
    let elapsed = tokio::time::Instant::now().saturating_duration_since(anchor.simulated);
    let at = Duration::new(anchor.real.tv_sec as u64, anchor.real.tv_nsec as u32) + elapsed;
    Some(libc::timespec {
        tv_sec: at.as_secs() as libc::time_t,
        tv_nsec: at.subsec_nanos() as libc::c_long,
    })
}

/// The C library's `clock_gettime`, replaced for the whole executable (see
/// the module documentation).
///
/// # Safety
///
/// As the C function: `tp` must be null or point to a writable `timespec`.
#[no_mangle]
pub unsafe extern "C" fn clock_gettime(clock: libc::clockid_t, tp: *mut libc::timespec) -> libc::c_int {
    let monotonic = matches!(
        clock,
        libc::CLOCK_MONOTONIC | libc::CLOCK_MONOTONIC_RAW | libc::CLOCK_MONOTONIC_COARSE | libc::CLOCK_BOOTTIME
    );
    if monotonic && !tp.is_null() {
        if let Some(ts) = simulated_now() {
            // SAFETY: the caller passes a writable timespec (checked non-null).
            unsafe { tp.write(ts) };
            return 0;
        }
    }
    // SAFETY: the kernel validates `tp` and reports EFAULT for a bad one.
    unsafe { libc::syscall(libc::SYS_clock_gettime, clock, tp) as libc::c_int }
}

/// Keeps the replacement linked into every executable that enters a
/// simulation: the linker takes an object from a library only for a symbol
/// something asks for, and the standard library's references alone might be
/// bound to the C library first.
fn linked() -> usize {
    std::hint::black_box(clock_gettime as *const () as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime like the simulation's: one thread, time paused.
    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn std_instant_follows_the_paused_clock_only_inside_a_simulation() {
        let rt = paused_runtime();
        rt.block_on(async {
            let before = std::time::Instant::now();
            let guard = enter();
            let t0 = std::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let t1 = std::time::Instant::now();
            // An hour of simulated time passed in no real time at all.
            assert_eq!(t1 - t0, Duration::from_secs(3600));
            assert!(t0 >= before);
            drop(guard);
            // Back on the real clock once the guard drops.
            let real = std::time::Instant::now();
            assert!(real < t1, "the real clock did not run an hour in this test");
        });
        // Other threads never see simulated time.
        let a = std::thread::spawn(std::time::Instant::now).join().unwrap();
        assert!(a.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn the_wall_clock_stays_real() {
        let rt = paused_runtime();
        rt.block_on(async {
            let _guard = enter();
            let wall = std::time::SystemTime::now();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let later = std::time::SystemTime::now();
            assert!(later.duration_since(wall).unwrap_or_default() < Duration::from_secs(60));
        });
    }
}
