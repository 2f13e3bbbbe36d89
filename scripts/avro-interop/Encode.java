// Encodes one tick per contract version with Apache Avro for Java's own
// single-object encoder (BinaryMessageEncoder: C3 01, the schema's
// parsingFingerprint64, the datum), as a Java producer would, and prints
// them as hex, one line each:
//
//     v1<TAB><hex>
//     v2<TAB><hex>
//
// Run by check.sh: java -cp '.cache/avro-interop/lib/*' Encode.java
//     schemas/tick.v1.avsc schemas/tick.avsc
import java.io.File;
import java.nio.ByteBuffer;
import java.util.Map;
import java.util.TreeMap;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageEncoder;

public class Encode {
  static String hex(ByteBuffer buf) {
    StringBuilder s = new StringBuilder();
    while (buf.hasRemaining()) s.append(String.format("%02x", buf.get()));
    return s.toString();
  }

  static GenericRecord tick(Schema schema) {
    GenericRecord r = new GenericData.Record(schema);
    r.put("symbol", "AAPL");
    r.put("price", 189.25);
    r.put("size", 300.0);
    r.put("bid", 189.24);
    r.put("ask", null);
    r.put("venue", "XNAS");
    r.put("ts", 1_764_270_000_123_456L);
    r.put("seq", 42L);
    return r;
  }

  public static void main(String[] args) throws Exception {
    Schema v1 = new Schema.Parser().parse(new File(args[0]));
    Schema v2 = new Schema.Parser().parse(new File(args[1]));
    GenericRecord t1 = tick(v1);
    GenericRecord t2 = tick(v2);
    Map<String, String> attrs = new TreeMap<>();
    attrs.put("cond", "@F");
    t2.put("attrs", attrs);
    System.out.println("v1\t" + hex(new BinaryMessageEncoder<GenericRecord>(GenericData.get(), v1).encode(t1)));
    System.out.println("v2\t" + hex(new BinaryMessageEncoder<GenericRecord>(GenericData.get(), v2).encode(t2)));
  }
}
