//! Keeping SIGPIPE away from the S3 client's sockets.
//!
//! On Linux a write to a socket whose peer has gone (a server or proxy that reset the
//! connection) raises SIGPIPE in the writing thread, and tokio writes with `writev`, which
//! has no `MSG_NOSIGNAL`. Rust ignores SIGPIPE by default, but a program may restore the
//! default action (the `holdfast` command does, so that `holdfast ls | head` ends quietly),
//! and then one dropped connection would kill the whole process instead of failing one
//! request that is retried. So:
//! * the runtime's own threads block SIGPIPE for their whole life ([`block_forever`]): the
//!   signal stays pending on the thread, the write fails with `EPIPE`;
//! * a caller's thread, which polls the request future inside `block_on`, blocks it while
//!   it does ([`Guard`]); before restoring its mask, a SIGPIPE raised meanwhile is taken off
//!   the pending set, so that it is not delivered when the mask is restored.
//!
//! Signal masks are per thread, so nothing here changes how the rest of the program sees
//! SIGPIPE (writes to a closed stdout still end it quietly).

/// The signal set holding only SIGPIPE.
fn sigpipe_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set we own; they cannot fail
    // for a valid pointer and signal number.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        set
    }
}

/// Blocks SIGPIPE in the calling thread for good (for the runtime's threads).
pub(crate) fn block_forever() {
    let set = sigpipe_set();
    // SAFETY: pthread_sigmask only changes the calling thread's mask; a null old-set
    // pointer is allowed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// While it lives, SIGPIPE is blocked in the thread that made it; when dropped, a SIGPIPE
/// that became pending meanwhile is discarded and the thread's previous mask restored.
pub(crate) struct Guard {
    /// The mask to restore, if SIGPIPE was not blocked before.
    old: Option<libc::sigset_t>,
}

impl Guard {
    /// Blocks SIGPIPE in the current thread.
    pub(crate) fn new() -> Guard {
        let set = sigpipe_set();
        // SAFETY: as in `block_forever`; `old` is a valid out-pointer.
        unsafe {
            let mut old = std::mem::zeroed::<libc::sigset_t>();
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return Guard { old: None };
            }
            let was_blocked = libc::sigismember(&old, libc::SIGPIPE) == 1;
            Guard {
                old: (!was_blocked).then_some(old),
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(old) = self.old.take() else {
            return;
        };
        let set = sigpipe_set();
        // SAFETY: sigpending fills a set we own; sigtimedwait with a zero timeout takes a
        // pending SIGPIPE (blocked here, so it is not delivered meanwhile) or returns at
        // once; pthread_sigmask restores the mask saved in `new`.
        unsafe {
            let mut pending = std::mem::zeroed::<libc::sigset_t>();
            if libc::sigpending(&mut pending) == 0
                && libc::sigismember(&pending, libc::SIGPIPE) == 1
            {
                let zero = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE {}
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With SIGPIPE's default action (death) in force, a thread in a guard writes to a
    /// socket whose peer is gone, gets EPIPE, and lives on after the guard is dropped.
    #[test]
    fn guard_swallows_sigpipe_from_a_dead_socket() {
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;
        // A plain write(2), as tokio's writev does: no MSG_NOSIGNAL.
        fn raw_write(s: &UnixStream) -> std::io::Error {
            // SAFETY: writes one byte from a valid buffer to an open descriptor.
            let n = unsafe { libc::write(s.as_raw_fd(), b"x".as_ptr().cast(), 1) };
            assert_eq!(n, -1, "the write to a closed peer succeeded");
            std::io::Error::last_os_error()
        }
        // Run in a child process: the default action must not be set in the test runner.
        if std::env::var_os("HOLDFAST_SIGPIPE_CHILD").is_none() {
            let exe = std::env::current_exe().unwrap();
            let out = std::process::Command::new(exe)
                .args([
                    "--exact",
                    "sigpipe::tests::guard_swallows_sigpipe_from_a_dead_socket",
                    "--nocapture",
                ])
                .env("HOLDFAST_SIGPIPE_CHILD", "1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "child: {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("EPIPE seen"));
            return;
        }
        // SAFETY: installs the default disposition; no handler code.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        {
            let _g = Guard::new();
            assert_eq!(raw_write(&a).raw_os_error(), Some(libc::EPIPE));
        }
        // Still alive after the mask is restored; and in a thread that blocks for good.
        std::thread::spawn(move || {
            block_forever();
            assert_eq!(raw_write(&a).raw_os_error(), Some(libc::EPIPE));
        })
        .join()
        .unwrap();
        println!("EPIPE seen");
    }
}
