//! The one place in the workspace that runs prost/tonic code generation.
//! Needs `protoc` (Debian: `protobuf-compiler`); `PROTOC` overrides the path.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .codec_path("crate::codec::WeftCodec")
        // Maps as BTreeMap: a profile's features arrive sorted from the
        // evaluator and are collected without hashing; output is ordered.
        .btree_map(".")
        .file_descriptor_set_path(out_dir.join("weft_descriptor.bin"))
        .compile_protos(&["weft/v1/weft.proto"], &["."])?;
    println!("cargo:rerun-if-changed=weft/v1/weft.proto");
    Ok(())
}
