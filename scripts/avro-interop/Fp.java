// Prints, for each Avro schema file given, what the reference implementation
// (Apache Avro for Java) computes: the Parsing Canonical Form and its
// CRC-64-AVRO fingerprint as the 8 little-endian bytes that follow C3 01 in
// a single-object encoded value. One line per file, tab-separated:
//
//     <file> <fingerprint, 16 hex digits, little-endian> <PCF>
//
// Run by check.sh: java -cp '.cache/avro-interop/lib/*' Fp.java FILE...
import java.io.File;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;

public class Fp {
  public static void main(String[] args) throws Exception {
    for (String path : args) {
      Schema schema = new Schema.Parser().parse(new File(path));
      long fp = SchemaNormalization.parsingFingerprint64(schema);
      StringBuilder hex = new StringBuilder();
      for (int i = 0; i < 8; i++) {
        hex.append(String.format("%02x", (fp >>> (8 * i)) & 0xff));
      }
      System.out.println(path + "\t" + hex + "\t" + SchemaNormalization.toParsingForm(schema));
    }
  }
}
