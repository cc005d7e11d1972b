//! One module per `recflow` subcommand.

pub mod bench;
pub mod demo;
pub mod generate;
pub mod init;
pub mod loadgen;
pub mod produce;
pub mod run;
pub mod serve;
