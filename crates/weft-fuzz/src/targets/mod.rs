//! The fuzz targets, one per port plus the turn engine.

pub mod config;
pub mod core;
pub mod durabletask;
pub mod http;
pub mod internal;
pub mod placement;
