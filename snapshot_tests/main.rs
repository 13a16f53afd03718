//! Integration tests that boot from the real baked snapshot: the `kiln`
//! binary as a user runs it, and the library in-process.

mod cli;
mod cron;
mod embed;
mod library;
