//! One module per `recflow` subcommand.

pub mod bench;
pub mod generate;
pub mod init;
pub mod produce;
pub mod run;
