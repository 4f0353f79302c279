//! Asynchronous I/O: librbd completions bridged to futures.
//!
//! Each operation is submitted when the method is called (so calls made in order are
//! submitted in order) and returns a `'static` future. The request state — the result channel
//! and the data buffer — is boxed and owned by librbd until the completion callback runs:
//! dropping the future does not free a buffer librbd is still using. [`Image`] waits for all
//! completions before it closes the image.

use std::ffi::{c_char, c_void};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use rados::{Error, ErrorKind, Result};
use tokio::sync::oneshot;

use crate::image::{InFlight, Ticket};
use crate::{stuck, Image};

/// What an operation needs kept alive until librbd is done with it.
enum Buffer {
    /// Nothing (flush, discard, write-zeroes).
    None,
    /// Data being written: librbd reads from it until completion.
    ///
    /// This must stay alive and unchanged until the completion callback has run, not merely
    /// until `rbd_aio_write2` returns: with zero-copy writes (which `rados::Cluster::connect`
    /// enables by default) librbd does not copy the data but wraps this very memory, and its
    /// caches, the journal and the messenger may read it at any time before the callback
    /// (librbd holds the callback back until it has dropped its last reference). `Bytes` is
    /// immutable and is freed (or a pooled buffer returned to its pool) only when its last
    /// clone is dropped; this one is dropped in or after [`complete`], never before.
    Write(Bytes),
    /// Space being read into: librbd writes to its spare capacity until completion (the
    /// vector's length stays 0 until then).
    Read(Vec<u8>),
}

/// The boxed state whose pointer is the completion's callback argument.
struct Request {
    buffer: Buffer,
    done: oneshot::Sender<(isize, Buffer)>,
    in_flight: Arc<InFlight>,
    ticket: Ticket,
}

/// The completion callback. Runs on a librbd thread; must not unwind into C.
extern "C" fn complete(completion: ceph_sys::rbd_completion_t, arg: *mut c_void) {
    // A panic here would be a bug in this file; catching it keeps librbd's thread alive, and
    // the waiting future then sees its channel closed and reports an error.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `arg` is the `Box<Request>` leaked in `submit` for this completion; librbd
        // calls this callback exactly once per completion, so ownership is taken back once.
        let request = unsafe { Box::from_raw(arg.cast::<Request>()) };
        // No one reads the completion once the ticket is disarmed (`TicketState::failed_with`).
        request.ticket.disarm();
        // SAFETY: the completion is live until released just below.
        let ret = unsafe { ceph_sys::api().rbd_aio_get_return_value(completion) };
        // SAFETY: released once, after its last use; librbd no longer touches the buffer.
        unsafe { ceph_sys::api().rbd_aio_release(completion) };
        let Request {
            buffer,
            done,
            in_flight,
            ticket,
        } = *request;
        // The receiver may be gone (future dropped): the buffer is then freed here.
        let _ = done.send((ret, buffer));
        in_flight.end(&ticket);
    }));
}

/// A submitted operation: its outcome to come (the return value and the buffer handed back),
/// and its place among the operations in flight.
struct Pending {
    done: oneshot::Receiver<(isize, Buffer)>,
    ticket: Ticket,
}

impl Image {
    /// Boxes the request, creates a completion and calls `start`; on a synchronous failure
    /// takes everything back and reports it.
    fn submit(
        &self,
        buffer: Buffer,
        start: impl FnOnce(ceph_sys::rbd_image_t, *mut u8, ceph_sys::rbd_completion_t) -> i32,
    ) -> std::result::Result<Pending, i32> {
        let (done, receiver) = oneshot::channel();
        let in_flight = self.handle.in_flight.clone();
        let ticket = in_flight.begin();
        let mut request = Box::new(Request {
            buffer,
            done,
            in_flight,
            ticket: ticket.clone(),
        });
        // The buffer lives inside the box; the box's heap address is stable, so this pointer
        // stays valid until the callback frees the box.
        let data_ptr = match &mut request.buffer {
            Buffer::None => std::ptr::null_mut(),
            Buffer::Write(bytes) => bytes.as_ptr().cast_mut(),
            Buffer::Read(vec) => vec.as_mut_ptr(),
        };
        let arg = Box::into_raw(request);
        let mut completion: ceph_sys::rbd_completion_t = std::ptr::null_mut();
        // SAFETY: `arg` is a valid pointer handed to the callback; `complete` matches the
        // callback type; valid out-pointer.
        let code = unsafe {
            ceph_sys::api().rbd_aio_create_completion(arg.cast(), Some(complete), &mut completion)
        };
        if code < 0 {
            // SAFETY: no completion exists, so the callback will never run: reclaim the box.
            let request = unsafe { Box::from_raw(arg) };
            request.in_flight.end(&request.ticket);
            return Err(code);
        }
        ticket.arm(completion);
        let code = start(self.raw(), data_ptr, completion);
        if code < 0 {
            // librbd refused the operation, so the callback will not run.
            ticket.disarm();
            // SAFETY: the completion was never started; release it and reclaim the box once.
            unsafe { ceph_sys::api().rbd_aio_release(completion) };
            // SAFETY: as above, sole owner again.
            let request = unsafe { Box::from_raw(arg) };
            request.in_flight.end(&request.ticket);
            return Err(code);
        }
        Ok(Pending {
            done: receiver,
            ticket,
        })
    }

    /// The outcome of a submitted operation. A zero-copy write (`watched`) is looked into
    /// while it waits, and fails if librbd will never complete it (`stuck.rs`).
    fn outcome(
        &self,
        op: &'static str,
        offset: u64,
        len: u64,
        submitted: std::result::Result<Pending, i32>,
        watched: bool,
    ) -> impl Future<Output = Result<(isize, Buffer)>> + Send + 'static {
        let target = format!("{} [{}..+{}]", self.spec(), offset, len);
        async move {
            let pending =
                submitted.map_err(|code| Error::from_code(code.into(), op, target.clone()))?;
            let completed = if watched {
                stuck::wait(pending.done, &pending.ticket, op, &target).await?
            } else {
                pending.done.await
            };
            let (ret, buffer) = completed.map_err(|_| {
                Error::new(ErrorKind::Other, op, format!("{target} (completion lost)"))
            })?;
            if ret < 0 {
                return Err(Error::from_code(ret as i64, op, target));
            }
            Ok((ret, buffer))
        }
    }

    /// Submits an operation whose only result is success or failure (write, write-zeroes,
    /// discard, flush).
    fn unit_op(
        &self,
        op: &'static str,
        offset: u64,
        len: u64,
        buffer: Buffer,
        start: impl FnOnce(ceph_sys::rbd_image_t, *mut u8, ceph_sys::rbd_completion_t) -> i32,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let watched = matches!(buffer, Buffer::Write(_)) && self.handle.zero_copy;
        let submitted = self.submit(buffer, start);
        let outcome = self.outcome(op, offset, len, submitted, watched);
        async move { outcome.await.map(drop) }
    }

    /// Writes `data` at `offset`.
    ///
    /// Fails at once, without submitting: with [`ErrorKind::ReadOnly`] on an image opened
    /// read-only or at a snapshot; with [`ErrorKind::InvalidArgument`] when the range goes
    /// past the image's end (librbd would drop the part beyond it and report success, or, with
    /// zero-copy writes, never complete); with [`ErrorKind::Unsupported`] when the image's pool
    /// or image configuration would make librbd hold the write's completion forever (an
    /// object-cacher cache over zero-copy writes), the error naming the settings, their source
    /// and the fix. A zero-copy write librbd fails without completing it (this client
    /// blocklisted, the exclusive lock held by another client) fails with librbd's error
    /// within about a second (see `stuck.rs`).
    pub fn write(
        &self,
        offset: u64,
        data: Bytes,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let submitted = match &self.handle.write_refusal {
            Some(refusal) => Err(refusal.clone()),
            None => self
                .check_in_bounds(offset, data.len() as u64)
                .map(|()| self.submit_write(offset, data)),
        };
        async move { submitted?.await }
    }

    /// Fails unless `offset..offset + len` lies within the image as it is now.
    fn check_in_bounds(&self, offset: u64, len: u64) -> Result<()> {
        let target = || format!("{} [{}..+{}]", self.spec(), offset, len);
        // librbd reads the header again first when it changed, so this can fail as the write
        // would (a blocklisted client): the write's error then, with the same errno.
        let size = self
            .size()
            .map_err(|e| Error::from_code(-i64::from(e.errno()), "write to", target()))?;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(
                Error::from_code((-libc::EINVAL).into(), "write to", target()).with_reason(
                    format!("the range goes past the image's end ({size} bytes)"),
                ),
            ),
        }
    }

    fn submit_write(
        &self,
        offset: u64,
        data: Bytes,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let len = data.len();
        // `rbd_aio_write2` always returns 0 (librbd reports every failure through the
        // completion), so a buffer librbd has wrapped is never taken back by `submit`.
        self.unit_op(
            "write to",
            offset,
            len as u64,
            Buffer::Write(data),
            move |image, ptr, completion| {
                // SAFETY: `ptr` points to `len` bytes kept alive and unchanged in the request
                // until the completion callback has run.
                unsafe {
                    ceph_sys::api().rbd_aio_write2(
                        image,
                        offset,
                        len,
                        ptr as *const c_char,
                        completion,
                        0,
                    )
                }
            },
        )
    }

    /// Reads `len` bytes at `offset`. Fails if the range is beyond the image's end.
    pub fn read(
        &self,
        offset: u64,
        len: usize,
    ) -> impl Future<Output = Result<Bytes>> + Send + 'static {
        // Not zero-filled first: librbd writes every byte of a successful read, zeros for
        // unallocated ranges included, as C callers with malloc'd buffers rely on.
        let submitted = self.submit(
            Buffer::Read(Vec::with_capacity(len)),
            |image, ptr, completion| {
                // SAFETY: `ptr` points to `len` writable bytes (the vector's capacity) kept alive
                // until completion.
                unsafe {
                    ceph_sys::api().rbd_aio_read2(
                        image,
                        offset,
                        len,
                        ptr.cast::<c_char>(),
                        completion,
                        0,
                    )
                }
            },
        );
        let outcome = self.outcome("read from", offset, len as u64, submitted, false);
        let target = format!("{} [{}..+{}]", self.spec(), offset, len);
        async move {
            let (ret, buffer) = outcome.await?;
            match buffer {
                Buffer::Read(mut vec) if ret as usize == len && vec.capacity() >= len => {
                    // SAFETY: the read completed with `ret == len`: librbd has written all
                    // `len` bytes of the capacity, so they are initialized.
                    unsafe { vec.set_len(len) };
                    Ok(Bytes::from(vec))
                }
                _ => Err(Error::new(ErrorKind::Other, "read (short) from", target)),
            }
        }
    }

    /// Writes zeros over a range; on a thick range librbd deallocates whole objects.
    pub fn write_zeroes(
        &self,
        offset: u64,
        len: usize,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.unit_op(
            "write zeroes to",
            offset,
            len as u64,
            Buffer::None,
            move |image, _, completion| {
                // SAFETY: open image; no buffer involved.
                unsafe {
                    ceph_sys::api().rbd_aio_write_zeroes(image, offset, len, completion, 0, 0)
                }
            },
        )
    }

    /// Discards (deallocates) a range; it reads back as zeros.
    pub fn discard(
        &self,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.unit_op(
            "discard",
            offset,
            len,
            Buffer::None,
            move |image, _, completion| {
                // SAFETY: open image; no buffer involved.
                unsafe { ceph_sys::api().rbd_aio_discard(image, offset, len, completion) }
            },
        )
    }

    /// Waits until every write submitted before this call is durable.
    pub fn flush(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.unit_op("flush", 0, 0, Buffer::None, move |image, _, completion| {
            // SAFETY: open image.
            unsafe { ceph_sys::api().rbd_aio_flush(image, completion) }
        })
    }
}
