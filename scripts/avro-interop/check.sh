#!/usr/bin/env bash
# Checks tickfan's Avro schema fingerprints against the reference
# implementation, Apache Avro for Java (version in pom.xml beside this file).
#
#   scripts/avro-interop/check.sh
#
# Needs Java 17+ and Maven (which fetches Avro and its dependencies from
# Maven Central into .cache/avro-interop/lib). `.ci/run` runs it. It runs
#   - Fp.java: each schema's Parsing Canonical Form and CRC-64-AVRO
#     fingerprint, per SchemaNormalization;
#   - Encode.java: one tick per contract version, single-object encoded by
#     BinaryMessageEncoder;
# and then the tests (compiled only with cfg(avro_java), which build.rs sets
# when TICKFAN_AVRO_JAVA_OUT is set) that compare that output with what
# src/codec/canonical.rs computes and with the values the unit tests pin
# (codec::canonical::tests::java_output_matches,
# codec::avro::tests::java_records_match). Any difference fails.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
here=scripts/avro-interop
cache="$root/.cache/avro-interop"
mkdir -p "$cache"

if ! compgen -G "$cache/lib/avro-*.jar" >/dev/null || [[ $here/pom.xml -nt $cache/lib ]]; then
    rm -rf "$cache/lib"
    mvn -q -B -f $here/pom.xml dependency:copy-dependencies -DoutputDirectory="$cache/lib"
fi
cp="$cache/lib/*"
echo "Apache Avro (Java): $(cd "$cache/lib" && ls avro-*.jar)"
java -version 2>&1 | head -1

schemas=(schemas/tick.v1.avsc schemas/tick.avsc $here/pcf-sample.avsc)
# SLF4J's "no providers" warnings go to stderr; only stdout is compared.
java -cp "$cp" $here/Fp.java "${schemas[@]}" 2>/dev/null >"$cache/fingerprints.tsv"
java -cp "$cp" $here/Encode.java schemas/tick.v1.avsc schemas/tick.avsc 2>/dev/null >"$cache/records.tsv"
cut -f1,2 "$cache/fingerprints.tsv"

out="$(TICKFAN_AVRO_JAVA_OUT="$cache/fingerprints.tsv" \
  TICKFAN_AVRO_JAVA_RECORDS="$cache/records.tsv" \
  cargo test --locked --lib -- --exact \
  codec::canonical::tests::java_output_matches \
  codec::avro::tests::java_records_match 2>&1)" || { echo "$out"; exit 1; }
echo "$out" | grep -E '^test |^test result'
# Both tests must have run: a filter that matched nothing would pass too.
echo "$out" | grep -q 'test result: ok. 2 passed' || { echo "expected 2 interop tests to run" >&2; exit 1; }
echo "OK: tickfan matches Apache Avro for Java"
