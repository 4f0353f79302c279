//! The baseline of `benches/compare-export.sh`: a plain multipart upload of a local file with
//! the same client stack diskferry uses (aws-sdk-s3 through objstore), the same part size and
//! the same number of parts in flight, and nothing else: no reading from RBD, no encoding.
//!
//! Usage: `plain-upload FILE s3://BUCKET/KEY PART_SIZE_BYTES PARTS_IN_FLIGHT`
//! (endpoint and keys from the `AWS_*` environment, as diskferry reads them).

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use objstore::{MultipartUpload, PutOptions, S3Address, S3Config, S3Store};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err("usage: plain-upload FILE s3://BUCKET/KEY PART_SIZE PARTS_IN_FLIGHT".into());
    }
    let file = Arc::new(std::fs::File::open(&args[1])?);
    let size = file.metadata()?.len();
    let target = S3Address::parse(&args[2])?;
    let part_size: u64 = args[3].parse()?;
    let in_flight: usize = args[4].parse()?;
    let store = S3Store::from_config(&S3Config::from_env())?;
    let opts = PutOptions {
        overwrite: true,
        ..PutOptions::default()
    };
    let upload = MultipartUpload::create(&store, &target.bucket, &target.key, &opts).await?;
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    let mut parts = Vec::new();
    let mut offset = 0u64;
    let mut number = 1u32;
    let result: Result<(), Box<dyn std::error::Error>> = async {
        while offset < size {
            let len = (size - offset).min(part_size) as usize;
            let permit = slots.clone().acquire_owned().await?;
            let (f, at) = (file.clone(), offset);
            let data = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, at).map(|()| buf)
            })
            .await??;
            let (u, n) = (upload.clone(), number);
            tasks.spawn(async move {
                let _permit = permit;
                u.upload_part(n, data.into()).await
            });
            while let Some(done) = tasks.try_join_next() {
                parts.push(done??);
            }
            offset += len as u64;
            number += 1;
        }
        while let Some(done) = tasks.join_next().await {
            parts.push(done??);
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        upload.abort().await?;
        return Err(e);
    }
    let written = upload.complete(parts).await?;
    println!("{} {}", written.location, written.size);
    Ok(())
}
