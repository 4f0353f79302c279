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
    assert_eq!(
        collect(&mut full).await,
        vec![
            Extent::Data {
                offset: 0,
                data: Bytes::from(a)
            },
            Extent::Data {
                offset: 16 * MIB,
                data: Bytes::from(b)
            },
        ]
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
