//! The `weft` binary's commands, as a library so integration tests can call them (e.g.
//! [`cmd::cluster::cluster_status`]): the roles (`dev`, `sidecar`, `placement`) and the client
//! commands (`workflow`, `cluster`, `config`, `certs`). `main.rs` adds the allocator and the
//! runtime. Only this crate parses command lines; the libraries it drives never do.

pub mod cmd;
