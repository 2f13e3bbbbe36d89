//! Enables `cfg(real_kafka)` when the tests run against a real broker
//! (`TICKFAN_TEST_BROKERS` set), for the few tests that need what librdkafka's
//! mock cluster does not implement (for example CreatePartitions). Without
//! it those tests are not compiled at all, rather than passing vacuously.
//!
//! Likewise `cfg(avro_java)` when `TICKFAN_AVRO_JAVA_OUT` names the output of
//! the Java reference run (scripts/avro-interop/check.sh, run by CI).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(real_kafka)");
    println!("cargo::rustc-check-cfg=cfg(avro_java)");
    println!("cargo::rerun-if-env-changed=TICKFAN_TEST_BROKERS");
    println!("cargo::rerun-if-env-changed=TICKFAN_AVRO_JAVA_OUT");
    if std::env::var("TICKFAN_AVRO_JAVA_OUT").is_ok_and(|v| !v.trim().is_empty()) {
        println!("cargo::rustc-cfg=avro_java");
    }
    if std::env::var("TICKFAN_TEST_BROKERS").is_ok_and(|v| !v.trim().is_empty()) {
        println!("cargo::rustc-cfg=real_kafka");
    }
}
