//! Guest → host mapping: L1 and L2 entries decoded and checked, and the walk that turns them into
//! guest-ordered, merged extents while holding one L2 table at a time.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::{ReadError, ReadResult};
use crate::format::*;
use crate::header::Header;
use crate::io::ReadAt;

/// What a guest range maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Uncompressed data at a host byte range of the same length.
    Data {
        /// Host (file) offset of the first byte.
        host_offset: u64,
    },
    /// One compressed cluster. The guest range is one cluster (shorter at the end of the disk).
    Compressed {
        /// Host offset of the compressed bytes (not aligned).
        host_offset: u64,
        /// Bytes to read from `host_offset`: the descriptor's sector range, clamped to the end
        /// of the file. The stream may end before.
        compressed_len: u64,
    },
    /// Allocated or not, the range reads as zeros (v3 zero flag).
    Zero,
    /// Not allocated; with no backing file it reads as zeros.
    Unallocated,
}

/// A guest range and what it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Guest offset of the first byte.
    pub guest_offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the range maps to.
    pub kind: ExtentKind,
}

impl Extent {
    /// Guest offset one past the last byte.
    pub fn guest_end(&self) -> u64 {
        self.guest_offset + self.len
    }

    /// Whether the range reads as zeros without reading the file.
    pub fn reads_as_zero(&self) -> bool {
        matches!(self.kind, ExtentKind::Zero | ExtentKind::Unallocated)
    }

    /// Extends `self` by `next` if they are contiguous and of the same mergeable kind.
    fn try_merge(&mut self, next: &Extent) -> bool {
        if self.guest_end() != next.guest_offset {
            return false;
        }
        let mergeable = match (self.kind, next.kind) {
            (ExtentKind::Data { host_offset: a }, ExtentKind::Data { host_offset: b }) => {
                a + self.len == b
            }
            (ExtentKind::Zero, ExtentKind::Zero)
            | (ExtentKind::Unallocated, ExtentKind::Unallocated) => true,
            _ => false,
        };
        if mergeable {
            self.len += next.len;
        }
        mergeable
    }
}

/// Decodes and checks an L1 entry; returns the L2 table offset, or `None` if unallocated.
pub(crate) fn decode_l1(
    header: &Header,
    index: u64,
    entry: u64,
    file_len: u64,
) -> ReadResult<Option<u64>> {
    if entry & L1_RESERVED_MASK != 0 {
        return Err(ReadError::L1ReservedBits { index, entry });
    }
    let offset = entry & OFFSET_MASK;
    if offset == 0 {
        return Ok(None);
    }
    let cs = header.cluster_size();
    if !offset.is_multiple_of(cs) {
        return Err(ReadError::UnalignedTable {
            table: "L2 table",
            offset,
        });
    }
    if offset < cs {
        return Err(ReadError::TableInHeader {
            table: "L2 table",
            offset,
        });
    }
    if offset + cs > file_len {
        return Err(ReadError::TableOutsideFile {
            table: "L2 table",
            offset,
            len: cs,
            file_len,
        });
    }
    Ok(Some(offset))
}

/// Decodes and checks one L2 entry for the guest cluster at `guest_offset` of `len` bytes.
pub(crate) fn decode_l2(
    header: &Header,
    guest_offset: u64,
    len: u64,
    entry: u64,
    file_len: u64,
) -> ReadResult<Extent> {
    let cs = header.cluster_size();
    let kind = if entry & OFLAG_COMPRESSED != 0 {
        let shift = compressed_sectors_shift(header.cluster_bits);
        let host = entry & ((1u64 << shift) - 1);
        let sector_mask = (1u64 << (header.cluster_bits - 8)) - 1;
        let sectors = ((entry >> shift) & sector_mask) + 1;
        let described = sectors * SECTOR_SIZE - (host % SECTOR_SIZE);
        if host < cs {
            return Err(ReadError::DataInHeader { guest_offset, host });
        }
        // The last sector of the last compressed cluster may run past the end of the file by
        // less than one sector (qemu packs at byte granularity and does not pad the file).
        if host >= file_len || host + described > file_len + SECTOR_SIZE - 1 {
            return Err(ReadError::CompressedOutsideFile {
                guest_offset,
                host,
                len: described,
                file_len,
            });
        }
        ExtentKind::Compressed {
            host_offset: host,
            compressed_len: described.min(file_len - host),
        }
    } else {
        if entry & L2_STANDARD_RESERVED_MASK != 0 {
            return Err(ReadError::L2ReservedBits {
                guest_offset,
                entry,
            });
        }
        let host = entry & OFFSET_MASK;
        if entry & OFLAG_ZERO != 0 {
            if header.version < 3 {
                return Err(ReadError::ZeroFlagInV2 { guest_offset });
            }
            ExtentKind::Zero
        } else if host == 0 {
            ExtentKind::Unallocated
        } else {
            if !host.is_multiple_of(cs) {
                return Err(ReadError::UnalignedData { guest_offset, host });
            }
            if host < cs {
                return Err(ReadError::DataInHeader { guest_offset, host });
            }
            if host + len > file_len {
                return Err(ReadError::DataOutsideFile {
                    guest_offset,
                    host,
                    file_len,
                });
            }
            ExtentKind::Data { host_offset: host }
        }
    };
    Ok(Extent {
        guest_offset,
        len,
        kind,
    })
}

/// Walks the mapping in guest order, yielding merged extents. Memory: one L2 table plus the
/// extents decoded from it.
pub struct ExtentWalker {
    reader: Arc<dyn ReadAt>,
    header: Arc<Header>,
    l1: Arc<[u64]>,
    file_len: u64,
    next_l1: usize,
    pending: Option<Extent>,
    ready: VecDeque<Extent>,
}

impl std::fmt::Debug for ExtentWalker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtentWalker")
            .field("next_l1", &self.next_l1)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl ExtentWalker {
    pub(crate) fn new(reader: Arc<dyn ReadAt>, header: Arc<Header>, l1: Arc<[u64]>) -> Self {
        let file_len = reader.len();
        Self {
            reader,
            header,
            l1,
            file_len,
            next_l1: 0,
            pending: None,
            ready: VecDeque::new(),
        }
    }

    fn add(&mut self, e: Extent) {
        if let Some(p) = &mut self.pending {
            if p.try_merge(&e) {
                return;
            }
            self.ready.push_back(*p);
        }
        self.pending = Some(e);
    }

    /// The next extent in guest order, or `None` at the end of the disk.
    pub async fn next(&mut self) -> ReadResult<Option<Extent>> {
        while self.ready.is_empty() {
            if self.next_l1 >= self.l1.len() {
                return Ok(self.pending.take());
            }
            self.walk_one_l2().await?;
        }
        Ok(self.ready.pop_front())
    }

    async fn walk_one_l2(&mut self) -> ReadResult<()> {
        let index = self.next_l1;
        self.next_l1 += 1;
        let header = Arc::clone(&self.header);
        let cs = header.cluster_size();
        let span = cs * header.l2_entries();
        let start = index as u64 * span;
        let end = (start + span).min(header.virtual_size());
        let l2_offset = decode_l1(&header, index as u64, self.l1[index], self.file_len)?;
        let Some(l2_offset) = l2_offset else {
            self.add(Extent {
                guest_offset: start,
                len: end - start,
                kind: ExtentKind::Unallocated,
            });
            return Ok(());
        };
        let table = read_exact(&*self.reader, "L2 table", l2_offset, cs as usize).await?;
        let clusters = (end - start).div_ceil(cs) as usize;
        for (i, raw) in table
            .chunks_exact(ENTRY_SIZE as usize)
            .take(clusters)
            .enumerate()
        {
            let entry = u64::from_be_bytes(raw.try_into().expect("8-byte entry"));
            let guest = start + i as u64 * cs;
            let len = cs.min(end - guest);
            let e = decode_l2(&header, guest, len, entry, self.file_len)?;
            self.add(e);
        }
        Ok(())
    }
}

/// Reads exactly `len` bytes at `offset`, mapping errors to [`ReadError`].
pub(crate) async fn read_exact(
    reader: &dyn ReadAt,
    what: &'static str,
    offset: u64,
    len: usize,
) -> ReadResult<bytes::Bytes> {
    let data = reader
        .read_at(offset, len)
        .await
        .map_err(|source| ReadError::Io {
            what,
            offset,
            source,
        })?;
    if data.len() != len {
        return Err(ReadError::ShortRead {
            what,
            offset,
            wanted: len,
            got: data.len(),
        });
    }
    Ok(data)
}
