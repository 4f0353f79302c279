//! One bounded retry loop for the librados and librbd calls that fill a buffer the caller
//! sized and, when it is too short, say how large it must be (`-ERANGE` with the needed
//! length, or a returned length larger than the one given).

use std::fmt;

use crate::{Error, ErrorKind, Result};

/// The largest buffer [`grow_until_fits`] allocates: 64 MiB, room for about a million image
/// names in one listing. A call that asks for more (a corrupt answer, or a pool far larger
/// than any we know) is refused rather than allowed to allocate without bound.
pub const MAX_GROWN_BUFFER_BYTES: usize = 64 << 20;

/// What one call with a buffer of a given length did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit<T> {
    /// The buffer was large enough: the result.
    Done(T),
    /// The buffer was too short; the call needs at least this many entries (0 when it did
    /// not say).
    Grow(usize),
}

/// Calls `call(len)` with a buffer length of `initial` entries of `E` first; each time it
/// answers [`Fit::Grow`], calls it again with the larger of the length it needs and twice
/// the last length, until it fits. A call that needs more than [`MAX_GROWN_BUFFER_BYTES`]
/// fails with an error naming `op` and `target`, as does one that keeps asking for more once
/// the buffer has reached that size, so the loop always ends.
pub fn grow_until_fits<E, T>(
    initial: usize,
    op: &str,
    target: &dyn fmt::Display,
    mut call: impl FnMut(usize) -> Result<Fit<T>>,
) -> Result<T> {
    let entry_size = std::mem::size_of::<E>().max(1);
    let max_len = MAX_GROWN_BUFFER_BYTES / entry_size;
    let mut len = initial.clamp(1, max_len);
    loop {
        let needed = match call(len)? {
            Fit::Done(result) => return Ok(result),
            Fit::Grow(needed) => needed,
        };
        if needed > max_len || len >= max_len {
            return Err(
                Error::new(ErrorKind::Other, op, target.to_string()).with_reason(format!(
                    "the answer needs a buffer of {} bytes, more than the limit of {} bytes",
                    needed.max(len.saturating_mul(2)).saturating_mul(entry_size),
                    MAX_GROWN_BUFFER_BYTES
                )),
            );
        }
        len = needed.max(len.saturating_mul(2)).min(max_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_what_the_call_needs_or_doubles() {
        let mut seen = Vec::new();
        let result = grow_until_fits::<u8, _>(16, "list", &"pool", |len| {
            seen.push(len);
            Ok(match len {
                16 => Fit::Grow(100),
                100 => Fit::Grow(0),
                _ => Fit::Done(len),
            })
        })
        .unwrap();
        assert_eq!(seen, [16, 100, 200]);
        assert_eq!(result, 200);
    }

    #[test]
    fn refuses_a_buffer_beyond_the_limit() {
        let mut calls = 0;
        let err = grow_until_fits::<u64, ()>(16, "list images in pool", &"rbd", |_| {
            calls += 1;
            Ok(Fit::Grow(MAX_GROWN_BUFFER_BYTES))
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(err.kind(), ErrorKind::Other);
        let text = err.to_string();
        assert!(text.starts_with("list images in pool rbd: "), "{text}");
        assert!(text.contains(&MAX_GROWN_BUFFER_BYTES.to_string()), "{text}");
    }

    #[test]
    fn a_call_that_never_fits_ends_at_the_limit() {
        let mut lens = Vec::new();
        let err = grow_until_fits::<[u8; 4096], ()>(1, "list", &"pool", |len| {
            lens.push(len);
            Ok(Fit::Grow(0))
        })
        .unwrap_err();
        let max_len = MAX_GROWN_BUFFER_BYTES / 4096;
        assert_eq!(lens.last(), Some(&max_len), "{lens:?}");
        assert!(lens.len() <= max_len.ilog2() as usize + 2, "{lens:?}");
        assert_eq!(err.kind(), ErrorKind::Other);
    }
}
