//! Integration tests of the counter extension: in-process clusters on loopback.

mod convergence;
mod faults;
mod fixtures;
mod lifecycle;
