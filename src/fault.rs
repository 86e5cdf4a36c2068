//! Fault injection for the crash tests, compiled in only with the
//! `fault-injection` feature (the test suite enables it; release builds
//! do not have it, and there this is an empty function).
//!
//! `SECRETFS_FAULT=POINT:ACTION` acts when `up` reaches POINT: `key` (the
//! passphrase was fetched) or a step name after it completed
//! (`create_file`, `attach_loop`, `format`, `open`, `make_filesystem`,
//! `mount`, ...), `format_header` (inside the format: the header and
//! our token are written, the key slot is not yet) or `unlock` (inside an
//! open, before the key slot is unlocked). ACTION is `kill`
//! (SIGKILL itself: a crash) or `pause` (print `SECRETFS-FAULT-PAUSED
//! <pid>` on stderr and sleep, so a test can inspect the running process
//! and then kill it, or send it SIGTERM). In the process that formats
//! or opens a member of a set ([`crate::member`]) `kill` kills the `up`
//! that started it first: the crash is of the whole run, as it was when
//! members were threads.

#[cfg(feature = "fault-injection")]
static MEMBER_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that this process is a member's child ([`crate::member`]).
pub fn in_member_child() {
    #[cfg(feature = "fault-injection")]
    MEMBER_CHILD.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Called by `up` at each named point.
#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    let Ok(spec) = std::env::var(crate::names::ENV_FAULT) else {
        return;
    };
    let Some((at, action)) = spec.split_once(':') else {
        return;
    };
    if at != name {
        return;
    }
    match action {
        "kill" => {
            if MEMBER_CHILD.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::getppid(),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        "pause" => {
            eprintln!("SECRETFS-FAULT-PAUSED {}", std::process::id());
            // Until killed, or until SIGTERM/SIGINT (which the caller then
            // handles as it would between any two steps).
            for _ in 0..36_000 {
                if crate::signals::caught().is_some() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        _ => {}
    }
}

/// Whether `SECRETFS_FAULT=POINT:legacy` asks `up` to act at POINT as an
/// earlier release did, so that the tests can make what it made and check
/// that it still opens (`set_key`: a new set gets a data key per member).
#[cfg(feature = "fault-injection")]
pub fn legacy(name: &str) -> bool {
    std::env::var(crate::names::ENV_FAULT).is_ok_and(|s| s == format!("{name}:legacy"))
}

/// Without the feature, never.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn legacy(_name: &str) -> bool {
    false
}

/// Called by `up` at each named point; without the feature it does nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
