//! Writes the seed corpus (run once after changing `src/seeds.rs`, then commit `corpus/`):
//! `cargo test -p weft-fuzz --test seeds -- --ignored`. The normal run checks the seeds decode.

use weft_placement::proto::raft::RaftPayload;
use weft_placement_server::raft::{RaftRpc, decode_request};

#[test]
#[ignore = "writes files: run it to regenerate corpus/"]
fn write_seed_corpus() {
    let n = weft_fuzz::seeds::write().expect("write corpus");
    assert!(n > 40, "only {n} seeds");
}

#[test]
fn the_raft_seeds_are_payloads_the_server_accepts() {
    let seeds = weft_fuzz::seeds::all();
    let (_, placement) = seeds
        .iter()
        .find(|(t, _)| *t == "placement")
        .expect("placement seeds");
    let rpcs = [
        (4, RaftRpc::AppendEntries),
        (5, RaftRpc::Vote),
        (6, RaftRpc::PreVote),
        (7, RaftRpc::InstallSnapshot),
    ];
    for (selector, rpc) in rpcs {
        let seed = placement.iter().find(|s| s[0] == selector).expect("seed");
        let p: RaftPayload = prost::Message::decode(&seed[1..]).expect("payload");
        if let Err(e) = decode_request(rpc, &p) {
            panic!(
                "{rpc:?} seed refused: {e}\n{}",
                String::from_utf8_lossy(&p.json)
            );
        }
    }
}
