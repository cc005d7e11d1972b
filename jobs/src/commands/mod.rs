//! One module per `recflow` subcommand.

pub mod bench;
pub mod generate;
pub mod run;
