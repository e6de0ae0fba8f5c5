//! Generates the etcd v3 wire types and service traits from `proto/` with a pure-Rust protobuf
//! compiler (no `protoc` needed on the build machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let descriptors = protox::compile(["etcd/rpc.proto", "concord/node.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors.clone())?;
    // JSON for etcd's gRPC gateway (`/v3/...`): proto field names, 64-bit integers as strings,
    // bytes as base64, zero values left out, as etcd's gateway writes them; unknown fields
    // are ignored, as etcd's gateway ignores them.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("descriptors.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
