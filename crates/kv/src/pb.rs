//! The etcd v3 wire types and gRPC services, generated from `proto/etcd/*.proto`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// etcd's key-value records (`mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's services and their messages (`etcdserverpb`).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// Concord DB's node-status service (`concordpb`).
pub mod concordpb {
    tonic::include_proto!("concordpb");
}
