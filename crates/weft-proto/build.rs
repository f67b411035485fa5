//! Compiles every `proto/*.proto` with protox (pure Rust; no `protoc` on the build machines), in
//! two sets with a descriptor each: the sidecar's protocols, and the placement port's.
use prost::Message;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary copied with a target dir from another checkout
    // must not compile that checkout's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    compile(
        &root,
        &["durabletask.proto", "internal.proto"],
        &out.join("descriptor.bin"),
    )?;
    framed_server(&root, &out.join("framed"))?;
    // A set of its own: the sidecar's reflection lists only the sidecar's services.
    compile(
        &root,
        &["placement.proto", "raft.proto", "health.proto"],
        &out.join("placement_descriptor.bin"),
    )?;
    Ok(())
}

fn compile(
    root: &Path,
    files: &[&str],
    descriptor: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    for f in files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [root])?;
    std::fs::write(descriptor, fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

/// The sidecar's `TaskHubSidecarService` server once more, with every message type taken from
/// the main set except `WorkItem`, which the server sends as [`WorkItemFrame`] (bytes encoded by
/// the hub from the history it already holds, not a copy of it): see `src/wire.rs`.
fn framed_server(root: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(out)?;
    let fds = protox::compile(["durabletask.proto"], [root])?;
    let mut cfg = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(out);
    for file in fds.file.iter().filter(|f| f.name() == "durabletask.proto") {
        let names = file
            .message_type
            .iter()
            .map(|m| m.name())
            .chain(file.enum_type.iter().map(|e| e.name()));
        for name in names {
            let rust = match name {
                "WorkItem" => "crate::wire::WorkItemFrame".to_string(),
                _ => format!("crate::durabletask::{name}"),
            };
            cfg = cfg.extern_path(format!(".{name}"), rust);
        }
    }
    cfg.compile_fds(fds)?;
    Ok(())
}
