//! Closed pipes end the process quietly, as they do for every other Unix tool.
//!
//! Rust's runtime ignores `SIGPIPE`, so a write to a closed pipe (`attndet config show CONFIG | head -1`) returns
//! `BrokenPipe` and `println!` turns that into a panic (exit code 101, a backtrace on stderr). Restoring the
//! default disposition makes the kernel end the process at the first such write instead, silently, which is
//! what the reader that closed the pipe asked for. Files, checkpoints and logs are written atomically, so no
//! half-written output is left behind.

/// Restore the default `SIGPIPE` disposition (terminate quietly). A no-op off Unix (and on Haiku, whose
/// signal numbers differ).
pub fn restore_default_sigpipe() {
    #[cfg(all(unix, not(target_os = "haiku")))]
    {
        // `signal(2)` from the C library that std already links; no extra crate needed.
        unsafe extern "C" {
            fn signal(signum: i32, handler: usize) -> usize;
        }
        // SIGPIPE is 13 on every Unix Rust supports; SIG_DFL is 0.
        const SIGPIPE: i32 = 13;
        const SIG_DFL: usize = 0;
        // SAFETY: setting the default disposition of one signal, before any other thread exists; the previous
        // handler (SIG_IGN set by std) is not needed.
        unsafe {
            signal(SIGPIPE, SIG_DFL);
        }
    }
}
