//! An edge whose only Avro is a mapped topic's (`--mapping ...:format=avro`,
//! no topic of the tick contract): the decoder's allocation cap holds there
//! too. A test binary of its own, since the cap is process-wide and any
//! tick-contract codec in the same process would set it.

use std::sync::Arc;

use apache_avro::Schema;
use tickfan::codec::{
    avro::{DecodeError, MAX_DECODE_ALLOCATION},
    mapping::{Lookup, Record, Skip, TopicReader, WriterSchemas},
};

struct One(Arc<Schema>);

impl WriterSchemas for One {
    fn lookup(&self, _id: u32) -> Lookup {
        Lookup::Found(self.0.clone())
    }
}

/// A 16-byte record whose map claims 2^22 entries: apache-avro reserves
/// what a block claims before reading it, so under its own default cap
/// (512 MiB of items) this reserved 300 MB, and 500 million entries (a
/// 5-byte count) aborted the process on a failed 36 GB allocation
/// (`mapped_avro` fuzz target).
#[test]
fn a_mapped_reader_alone_caps_what_a_record_may_make_the_decoder_allocate() {
    let schema = r#"{"type":"record","name":"T","fields":[
        {"name":"symbol","type":"string"},{"name":"price","type":"double"},
        {"name":"m","type":{"type":"map","values":"long"}}]}"#;
    let schemas = One(Arc::new(Schema::parse_str(schema).unwrap()));
    let mut r = TopicReader::new(
        "t:format=avro,symbol=symbol,price=price".parse().unwrap(),
        65536,
    );
    let mut value = vec![0, 0, 0, 0, 1, 2, b'A'];
    value.extend([0; 8]);
    value.extend([0x80, 0x80, 0x80, 0x04]); // 2^22, zig-zag varint
    let record = Record {
        key: None,
        value: &value,
        offset: 0,
        timestamp_ms: None,
    };
    assert_eq!(
        r.decode(&record, &schemas),
        Err(Skip::Bad(DecodeError::Malformed))
    );
    assert_eq!(
        apache_avro::util::max_allocation_bytes(usize::MAX),
        MAX_DECODE_ALLOCATION,
        "the cap was set by the mapped reader"
    );
}
