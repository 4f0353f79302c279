//! Helpers shared by the integration tests: test data, `qemu-img` wrappers, and sinks that
//! check the writer's chunk contract.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use qcow2::{Chunk, FileReadAt, Qcow2Image, Qcow2Writer, ReadOptions, WriterOptions};
use rand::{rngs::StdRng, RngCore, SeedableRng};

/// `qemu-img`; the tests fail (not skip) without it.
pub fn qemu_img() -> PathBuf {
    let p = PathBuf::from("/usr/bin/qemu-img");
    assert!(
        p.exists(),
        "qemu-img is required for this test: install qemu-utils"
    );
    p
}

/// Runs a command, panics with its output on failure, returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `qemu-img check` must report no errors (exit 0, no leaks either).
pub fn qemu_check(img: &Path) -> String {
    let out = run(Command::new(qemu_img())
        .args(["check", "-f", "qcow2"])
        .arg(img));
    assert!(
        out.contains("No errors were found"),
        "qemu-img check {}: {out}",
        img.display()
    );
    out
}

/// Creates an empty qcow2 image of `size` (qemu-img's size syntax, e.g. `8M`, `1T`).
pub fn qemu_create(img: &Path, size: &str) {
    run(Command::new(qemu_img())
        .args(["create", "-f", "qcow2"])
        .arg(img)
        .arg(size));
}

/// Runs `qemu-io` commands (e.g. `write -P 0xab 0 64k`) on a qcow2 image, in order.
pub fn qemu_io(img: &Path, commands: &[&str]) {
    let mut cmd = Command::new("/usr/bin/qemu-io");
    cmd.args(["-f", "qcow2"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    run(cmd.arg(img));
}

/// The virtual size `qemu-img info --output=json` reports for a qcow2 image.
pub fn qemu_virtual_size(img: &Path) -> u64 {
    let out = run(Command::new(qemu_img())
        .args(["info", "-f", "qcow2", "--output=json"])
        .arg(img));
    let info: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("qemu-img info of {}: {e}:\n{out}", img.display()));
    info["virtual-size"].as_u64().unwrap_or_else(|| {
        panic!(
            "qemu-img info of {} has no virtual-size:\n{out}",
            img.display()
        )
    })
}

/// `qemu-img compare` must say identical.
pub fn qemu_compare(raw: &Path, img: &Path) {
    let out = run(Command::new(qemu_img())
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(raw)
        .arg(img));
    assert!(out.contains("Images are identical"), "{out}");
}

/// Kinds of content in test disks.
#[derive(Debug, Clone, Copy)]
pub enum Fill {
    /// Incompressible.
    Random,
    /// Compressible text.
    Text,
    /// Explicit zero bytes (not a hole).
    Zeros,
}

/// Deterministic content.
pub fn content(fill: Fill, len: usize, seed: u64) -> Vec<u8> {
    match fill {
        Fill::Random => {
            let mut v = vec![0u8; len];
            StdRng::seed_from_u64(seed).fill_bytes(&mut v);
            v
        }
        Fill::Text => {
            let words = [
                "qcow2 ",
                "cluster ",
                "diskferry ",
                "refcount ",
                "sector ",
                "\n",
            ];
            let mut rng = StdRng::seed_from_u64(seed);
            let mut v = Vec::with_capacity(len + 16);
            while v.len() < len {
                v.extend_from_slice(
                    words[(rng.next_u32() % words.len() as u32) as usize].as_bytes(),
                );
            }
            v.truncate(len);
            v
        }
        Fill::Zeros => vec![0u8; len],
    }
}

/// A test disk: a size and data segments (offset, bytes) in order; the rest is holes.
#[derive(Debug, Clone)]
pub struct Disk {
    pub size: u64,
    pub segments: Vec<(u64, Vec<u8>)>,
}

impl Disk {
    /// Writes the disk as a sparse raw file.
    pub fn write_raw(&self, path: &Path) {
        let f = File::create(path).unwrap();
        f.set_len(self.size).unwrap();
        for (off, data) in &self.segments {
            f.write_all_at(data, *off).unwrap();
        }
    }

    /// The whole disk in memory (small disks only).
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.size as usize];
        for (off, data) in &self.segments {
            v[*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
        v
    }
}

/// Writes `disk` with the writer API, pushing each segment in pieces of `piece` bytes, and
/// checks the chunk contract on the way: data chunks contiguous from one cluster, tail chunks
/// continuing them up to `file_size`, header one cluster at offset 0.
pub async fn write_qcow2(
    disk: &Disk,
    options: WriterOptions,
    piece: usize,
    out: &Path,
) -> qcow2::Finished {
    let cs = options.cluster_size;
    let mut w = Qcow2Writer::new(disk.size, options).unwrap();
    let f = File::create(out).unwrap();
    let mut next = cs;
    let put = |c: &Chunk, next: &mut u64| {
        assert_eq!(
            c.file_offset, *next,
            "chunks must be contiguous and increasing"
        );
        assert!(!c.data.is_empty(), "empty chunk");
        f.write_all_at(&c.data, c.file_offset).unwrap();
        *next = c.end();
    };
    for (off, data) in &disk.segments {
        for (i, p) in data.chunks(piece.max(1)).enumerate() {
            let at = off + (i * piece) as u64;
            for c in w.push(at, Bytes::copy_from_slice(p)).await.unwrap() {
                put(&c, &mut next);
            }
        }
    }
    let done = w.finish().await.unwrap();
    for c in &done.tail_chunks {
        put(c, &mut next);
    }
    assert_eq!(next, done.file_size, "tail ends at file_size");
    assert_eq!(done.header_chunk.file_offset, 0);
    assert_eq!(done.header_chunk.data.len() as u64, cs);
    f.write_all_at(&done.header_chunk.data, 0).unwrap();
    assert_eq!(f.metadata().unwrap().len(), done.file_size);
    done
}

/// Reads a qcow2 file with our reader into a sparse raw file.
pub async fn read_to_raw(img: &Path, out: &Path, options: ReadOptions) -> u64 {
    let image = Qcow2Image::open(Arc::new(FileReadAt::open(img).unwrap()))
        .await
        .unwrap();
    let f = File::create(out).unwrap();
    f.set_len(image.virtual_size()).unwrap();
    let mut r = image.data_reader(options);
    let mut last_end = 0;
    while let Some(c) = r.next_chunk().await.unwrap() {
        assert!(c.guest_offset >= last_end, "chunks in guest order");
        last_end = c.guest_offset + c.data.len() as u64;
        assert!(r.bytes_in_flight() <= options.max_in_flight_bytes.max(2 * options.max_read_size));
        f.write_all_at(&c.data, c.guest_offset).unwrap();
    }
    image.virtual_size()
}

/// Byte-compares two files, in pieces (sparse 1 TiB files compare by data segments elsewhere).
pub fn assert_files_equal(a: &Path, b: &Path) {
    let fa = File::open(a).unwrap();
    let fb = File::open(b).unwrap();
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(la, lb, "{} and {} differ in size", a.display(), b.display());
    let mut pos = 0;
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    while pos < la {
        let n = ((la - pos) as usize).min(ba.len());
        fa.read_exact_at(&mut ba[..n], pos).unwrap();
        fb.read_exact_at(&mut bb[..n], pos).unwrap();
        assert!(
            ba[..n] == bb[..n],
            "{} and {} differ near {pos}",
            a.display(),
            b.display()
        );
        pos += n as u64;
    }
}

/// Reads guest ranges of `img` with the independent `qcow2-rs` reader (on its own thread and
/// runtime: its futures are not `Send`).
pub fn qcow2rs_read(img: &Path, ranges: &[(u64, usize)]) -> Vec<Vec<u8>> {
    let img = img.to_path_buf();
    let ranges = ranges.to_vec();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let params = qcow2_rs::dev::Qcow2DevParams::new(9, None, None, true, false);
            let dev = qcow2_rs::utils::qcow2_setup_dev_tokio(&img, &params)
                .await
                .unwrap_or_else(|e| panic!("qcow2-rs cannot open {}: {e:?}", img.display()));
            let mut out = Vec::new();
            for (off, len) in ranges {
                let mut buf = qcow2_rs::helpers::Qcow2IoBuf::<u8>::new(len);
                let n = dev
                    .read_at(&mut buf, off)
                    .await
                    .unwrap_or_else(|e| panic!("qcow2-rs read {off}+{len}: {e:?}"));
                assert_eq!(n, len, "qcow2-rs short read at {off}");
                out.push(buf.to_vec());
            }
            out
        })
    })
    .join()
    .unwrap()
}
