#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod error;
mod extension;
mod handle;
pub mod messages;
mod replica;
mod service;
mod state;

pub use error::CounterError;
pub use extension::CounterExtension;
pub use handle::CounterHandle;
pub use replica::CounterStatistics;
pub use service::{CounterService, SERVICE_NAME};
