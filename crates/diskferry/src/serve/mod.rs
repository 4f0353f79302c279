//! `diskferry serve`: scheduled snapshots, exports and Longhorn backups with retention, and
//! their observability and control surface (Prometheus metrics, an HTTP API).

pub mod config;
pub mod export_job;
pub mod http;
pub mod longhorn_job;
pub mod metrics;
pub mod runner;
pub mod scheduler;
pub mod service;
pub mod worker;
