//! The RBD source against the live cluster: full reads and incremental reads since a snapshot.

use bytes::Bytes;
use diskferry::sources::{RbdSource, RbdSourceOptions};
use diskferry::{Extent, RbdSpec, Source};
use diskferry_integration_tests::{context, pattern, pool, unique, ImageGuard, TEST_POOL};
use rbd::{CreateOptions, Image, OpenMode};

const MIB: u64 = 1 << 20;

async fn collect(source: &mut RbdSource) -> Vec<Extent> {
    let mut extents = Vec::new();
    while let Some(extent) = source.next_extent().await.unwrap() {
        extents.push(extent);
    }
    extents
}

/// The disk the extents describe (unlisted ranges read as zeros).
fn materialize(extents: &[Extent], size: u64) -> Vec<u8> {
    let mut disk = vec![0u8; size as usize];
    for extent in extents {
        if let Extent::Data { offset, data } = extent {
            disk[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
        }
    }
    disk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbd_source_reads_allocated_data_and_incremental_changes() {
    let ioctx = pool();
    let mut guard = ImageGuard::new(&ioctx);
    let name = guard.add(unique("src"));
    rbd::create(&ioctx, &name, 32 * MIB, &CreateOptions::default()).unwrap();
    let image = Image::open(&ioctx, &name, OpenMode::ReadWrite).unwrap();
    let (a, b) = (pattern(1, MIB as usize), pattern(2, MIB as usize));
    image.write(0, Bytes::from(a.clone())).await.unwrap();
    image.write(16 * MIB, Bytes::from(b.clone())).await.unwrap();
    image.flush().await.unwrap();
    image.snap_create("base").unwrap();

    let ctx = context();
    let spec = RbdSpec::parse(&format!("{TEST_POOL}/{name}@base")).unwrap();
    let mut full = RbdSource::open(&ctx, &spec, RbdSourceOptions::default())
        .await
        .unwrap();
    assert_eq!(full.size(), 32 * MIB);
    // A full read lists whole objects (the object map), so the data comes as the two 4 MiB
    // objects that hold `a` and `b`, zeros included; nothing else is read.
    let extents = collect(&mut full).await;
    let objects = [(0, 4 * MIB), (16 * MIB, 20 * MIB)];
    for extent in &extents {
        if let Extent::Data { offset, data } = extent {
            let end = offset + data.len() as u64;
            assert!(
                objects.iter().any(|(s, e)| s <= offset && end <= *e),
                "data [{offset}, {end}) outside the written objects"
            );
        }
    }
    let mut expected = vec![0u8; 32 * MIB as usize];
    expected[..MIB as usize].copy_from_slice(&a);
    expected[16 * MIB as usize..17 * MIB as usize].copy_from_slice(&b);
    assert!(
        materialize(&extents, 32 * MIB) == expected,
        "the full read differs from the image"
    );

    // Change one range, zero another, discard a third; read only the changes.
    let c = pattern(3, 4096);
    image.write(8 * MIB, Bytes::from(c.clone())).await.unwrap();
    image.write(0, Bytes::from(vec![0u8; 4096])).await.unwrap();
    image.discard(16 * MIB, MIB).await.unwrap();
    image.flush().await.unwrap();
    image.snap_create("next").unwrap();
    let options = RbdSourceOptions {
        since: Some("base".into()),
        ..Default::default()
    };
    let spec = spec.at(Some("next"));
    let mut incremental = RbdSource::open(&ctx, &spec, options).await.unwrap();
    let changes = collect(&mut incremental).await;
    // The OSD reports the first object's change from the object start: a zeroed 4 KiB
    // followed by unchanged data in that extent is delivered as data; what matters is
    // that every change is present and nothing outside the changed objects is.
    assert!(
        changes.contains(&Extent::Data {
            offset: 8 * MIB,
            data: Bytes::from(c)
        }),
        "{changes:?}"
    );
    assert!(
        changes.contains(&Extent::Zero {
            offset: 16 * MIB,
            len: MIB
        }),
        "{changes:?}"
    );
    let first = changes
        .iter()
        .find(|e| e.offset() == 0)
        .expect("the zeroed range is reported");
    assert!(first.len() >= 4096, "{first:?}");
    assert!(
        changes
            .iter()
            .all(|e| [0, 8 * MIB, 16 * MIB].contains(&e.offset())),
        "{changes:?}"
    );
}
