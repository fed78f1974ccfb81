//! Compiles the `.proto` files with protox, a pure-Rust protobuf compiler, so
//! that building Roster never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/roster/v1/kv.proto",
        "proto/roster/v1/cluster.proto",
        "proto/roster/v1/lease.proto",
        "proto/roster/v1/election.proto",
        "proto/roster/v1/topology.proto",
        "proto/roster/v1/watch.proto",
        "proto/roster/raft/v1/raft.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(fds)?;
    Ok(())
}
