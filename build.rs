//! Enables `cfg(avro_java)` when `TICKFAN_AVRO_JAVA_OUT` names the output of
//! the Java reference run (scripts/avro-interop/check.sh, run by CI).
//!
//! Whether the tests run against real Kafka is decided at run time
//! (`TICKFAN_TEST_BROKERS`), so one build of the tests serves the mock-cluster
//! and the real-Kafka passes; the tests that need a real broker live in test
//! targets of their own that `cargo test` does not run by default
//! (`tests/secure.rs`, `tests/real_kafka.rs`: `test = false` in Cargo.toml).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(avro_java)");
    println!("cargo::rerun-if-env-changed=TICKFAN_AVRO_JAVA_OUT");
    if std::env::var("TICKFAN_AVRO_JAVA_OUT").is_ok_and(|v| !v.trim().is_empty()) {
        println!("cargo::rustc-cfg=avro_java");
    }
}
