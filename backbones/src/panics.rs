//! Panics at the edge of code we do not control (burn's asserts, its GPU runtimes): their text, and a call
//! that turns one into an error without the panic hook's report.

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Run `f` with the panic hook silenced; a panic becomes `Err` with its text. The hook is process-wide, so
/// this is for calls made while nothing else is expected to panic (start-up reads, device probes).
pub fn quietly<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    result.map_err(|p| panic_text(&*p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_text_and_a_value_passes() {
        assert_eq!(quietly(|| 3), Ok(3));
        assert_eq!(
            quietly(|| -> u8 { panic!("bad {}", 7) }),
            Err("bad 7".to_string())
        );
        assert_eq!(
            quietly(|| -> u8 { panic!("literal") }),
            Err("literal".to_string())
        );
        assert_eq!(panic_text(&5u8), "unknown panic");
    }
}
