//! Progress reporting. The library has no UI: the binary implements [`Progress`] with a
//! progress bar, library users with whatever they like.

/// Receives progress of one transfer. All methods have empty defaults, so an implementation
/// keeps compiling when a method is added.
///
/// A transfer calls [`Progress::start`] once, then [`Progress::data_moved`] and
/// [`Progress::position`] as it goes, then [`Progress::finish`] once. Nothing is worth
/// drawing before `start`: only then is the size known.
pub trait Progress: Send + Sync {
    /// A transfer of a disk of `size` bytes starts; `what` names the disk (its address).
    fn start(&self, what: &str, size: u64) {
        let _ = (what, size);
    }

    /// Everything before `offset` of the disk has been handled (written, or skipped as a hole).
    fn position(&self, offset: u64) {
        let _ = offset;
    }

    /// `bytes` of data have been read from the source and handed on so far (a running
    /// total). Holes and zero ranges the source skipped are not counted: `bytes` over time
    /// is the data rate, and `position - bytes` the part of the disk that cost nothing.
    fn data_moved(&self, bytes: u64) {
        let _ = bytes;
    }

    /// The transfer ended (successfully or not).
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Forwards to another [`Progress`] but names the disk `name` in [`Progress::start`]: a job
/// that reads through a temporary snapshot shows the image the user named, not the snapshot.
pub(crate) struct Named<'a> {
    /// The name `start` reports.
    name: &'a str,
    /// Where everything goes.
    inner: &'a dyn Progress,
}

impl<'a> Named<'a> {
    /// Reports to `inner`, naming the disk `name`.
    pub(crate) fn new(name: &'a str, inner: &'a dyn Progress) -> Self {
        Self { name, inner }
    }
}

impl Progress for Named<'_> {
    fn start(&self, _what: &str, size: u64) {
        self.inner.start(self.name, size);
    }

    fn position(&self, offset: u64) {
        self.inner.position(offset);
    }

    fn data_moved(&self, bytes: u64) {
        self.inner.data_moved(bytes);
    }

    fn finish(&self) {
        self.inner.finish();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;

    /// One call a [`Recorder`] saw.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Call {
        Start(String, u64),
        Position(u64),
        DataMoved(u64),
        Finish,
    }

    /// Records every call, in order.
    #[derive(Debug, Default)]
    pub(crate) struct Recorder(pub Mutex<Vec<Call>>);

    impl Recorder {
        pub(crate) fn calls(&self) -> Vec<Call> {
            self.0.lock().unwrap().clone()
        }
    }

    impl Progress for Recorder {
        fn start(&self, what: &str, size: u64) {
            self.0.lock().unwrap().push(Call::Start(what.into(), size));
        }
        fn position(&self, offset: u64) {
            self.0.lock().unwrap().push(Call::Position(offset));
        }
        fn data_moved(&self, bytes: u64) {
            self.0.lock().unwrap().push(Call::DataMoved(bytes));
        }
        fn finish(&self) {
            self.0.lock().unwrap().push(Call::Finish);
        }
    }

    #[test]
    fn named_replaces_only_the_name_and_forwards_the_rest() {
        let recorder = Recorder::default();
        let named = Named::new("rbd:rbd/img", &recorder);
        named.start("rbd:rbd/img@diskferry-export-1", 10);
        named.data_moved(4);
        named.position(8);
        named.finish();
        assert_eq!(
            recorder.calls(),
            [
                Call::Start("rbd:rbd/img".into(), 10),
                Call::DataMoved(4),
                Call::Position(8),
                Call::Finish
            ]
        );
    }
}
