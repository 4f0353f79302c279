//! Integration tests of objstore: one conformance suite run by every reader and writer
//! (local files, a test HTTP server on 127.0.0.1, and the real RGW of the dev cluster), plus
//! tests specific to each store. One test binary, so the SDK is linked once.

mod aws_profile;
mod conformance;
mod http;
mod local;
mod s3;
mod support;
