//! A sink that writes nothing: the pipeline's digest is the result (verify, digest).

use async_trait::async_trait;

use crate::{Extent, Result, Sink, SinkReport, Summary};

/// Discards the data; counts it.
#[derive(Debug, Default)]
pub struct NullSink {
    bytes: u64,
}

#[async_trait]
impl Sink for NullSink {
    fn describe(&self) -> String {
        "(digest only)".into()
    }

    async fn write(&mut self, extent: Extent) -> Result<()> {
        if let Extent::Data { data, .. } = extent {
            self.bytes += data.len() as u64;
        }
        Ok(())
    }

    async fn finish(self: Box<Self>, _summary: &Summary) -> Result<SinkReport> {
        Ok(SinkReport {
            location: self.describe(),
            bytes_written: 0,
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
