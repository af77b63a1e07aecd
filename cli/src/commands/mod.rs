//! One module per `rvm` command; `main.rs` only parses and dispatches. `common` and `container`
//! hold what the container commands share; `terminal` the caller's terminal.

pub mod common;
pub mod container;
pub mod exec;
pub mod inspect;
pub mod kill;
pub mod logs;
pub mod monitor;
pub mod ps;
pub mod rm;
pub mod run;
pub mod start;
pub mod stop;
pub mod terminal;
