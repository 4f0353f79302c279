//! Helpers for the tests of `diskferry serve` (the library's runner and the daemon).

use std::process::Command;

use diskferry::serve::config::Job;
use diskferry::serve::runner::{lock_object, LOCK_NAME};
use diskferry::RbdSpec;

use crate::{ceph_conf, pool, TEST_POOL};

/// The lock objects of a job's images in the test pool, removed when dropped, even when the
/// test panics (a run releases its lock; the empty object stays).
#[derive(Debug)]
pub struct LockObjects(pub Vec<String>);

impl LockObjects {
    /// The lock objects of `job`'s `images` (names in the test pool).
    pub fn of(job: &Job, images: &[String]) -> Self {
        Self(
            images
                .iter()
                .map(|image| {
                    let spec = RbdSpec::parse(&format!("{TEST_POOL}/{image}")).unwrap();
                    lock_object(&job.name, &spec)
                })
                .collect(),
        )
    }

    /// Asserts nobody holds any of the locks (each was taken by some run, so it exists).
    pub fn assert_free(&self) {
        for object in &self.0 {
            let info = pool()
                .lockers(object, LOCK_NAME)
                .unwrap_or_else(|e| panic!("lockers of {object}: {e}"));
            assert!(info.lockers.is_empty(), "{object}: {:?}", info.lockers);
        }
    }
}

impl Drop for LockObjects {
    fn drop(&mut self) {
        let conf = ceph_conf();
        for object in &self.0 {
            let _ = Command::new("rados")
                .args(["--conf", &conf.to_string_lossy(), "-p", TEST_POOL, "rm"])
                .arg(object)
                .output();
        }
    }
}
