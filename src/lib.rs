//! tandem
#![warn(missing_docs)]
pub mod adapters;
pub mod app;
pub mod domain;
pub mod ports;
