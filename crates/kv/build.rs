//! Generates the etcd v3 wire types and service traits from `proto/` with a pure-Rust protobuf
//! compiler (no `protoc` needed on the build machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let descriptors = protox::compile(["etcd/rpc.proto", "concord/node.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
