//! The service behind `diskferry serve`'s HTTP API (work in progress).
