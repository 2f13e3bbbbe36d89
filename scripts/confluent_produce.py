#!/usr/bin/env python3
"""Third-party Avro producer for tickfan's tests: Confluent wire format via
confluent-kafka's own AvroSerializer (not tickfan code).

Each value is written as the Confluent framing
    0x00 | 4-byte big-endian schema id | Avro binary datum
by confluent_kafka.schema_registry.avro.AvroSerializer, which registers the
schema(s) under one subject in a Confluent-compatible Schema Registry (locally:
Apicurio Registry's /apis/ccompat/v7 API, see scripts/schema-registry.sh).

Usage:
  confluent_produce.py --brokers B --registry URL [--user U --password P]
      --topic T --schema v1.avsc [--schema v2.avsc ...] [--subject S]
      [--key-field symbol | --key LITERAL] [--compatibility NONE]
      [--reference NAME=SUBJECT=FILE.avsc ...]
      [--normalize] [--print-ids] [-X librdkafka.prop=value ...] < records.jsonl

stdin: one JSON object per line (blank lines and lines starting with '#' are
skipped). Reserved fields, removed before serialising:
  "_schema": N   index into the --schema list (0-based, default 0): lets one run
                 interleave records written with schema v1, v2, v3 on one topic
  "_key": "k"    key for this record (a string, or null for no key); overrides
                 --key/--key-field

Values are converted to what fastavro wants, following the schema:
  bytes/fixed with logicalType decimal: a JSON string ("101.25") or number
      (parsed losslessly) becomes decimal.Decimal; more fractional digits than
      the schema's scale is an error (fastavro refuses to round)
  timestamp-millis/-micros, local-timestamp-*: an integer passes as is (epoch
      millis/micros); an ISO-8601 string ("2024-01-02T03:04:05.678Z") is
      parsed to a datetime
  date: integer days, or an ISO date string; time-millis/-micros: integers
  plain bytes/fixed: a JSON string, taken as ISO-8859-1 (Avro's JSON encoding)
  float/double: any JSON number; int/long: integers
  unions: the first branch the value fits (null, then the listed order);
      {"branch name": value} (Avro JSON union encoding) also works when the
      object's single key names a branch
Key: the string value of --key-field (or --key) UTF-8 encoded (StringSerializer).
Partitioning: librdkafka's murmur2_random, i.e. the partition Java's default
partitioner picks for a non-null key (and random for a null key).

Schema references: each --reference registers FILE (a named type, full name
NAME) under SUBJECT first, in the order given; a later reference or a --schema
whose text names NAME (as a JSON string) is registered referring to it, as
Confluent's schema references (the serializer then resolves them through the
registry).

Schemas: all --schema files are registered under the subject (default
"<topic>-value") up front, in the order given, so on a fresh subject the i-th
file becomes version i+1. Unless --compatibility '' is given, the subject's
compatibility is set to NONE first (PUT /config/{subject}) so that any
evolution is accepted. Schemas are registered as written (normalize.schemas
is False) unless --normalize.

Prints "produced N" on stdout at the end (after "schema I id ID version V
subject S" lines with --print-ids). Exits 1 on any serialisation, registry or
delivery error, or when the final flush times out.
"""

import argparse
import datetime as dt
import decimal
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
TIMESTAMP_LOGICAL = {
    "timestamp-millis",
    "timestamp-micros",
    "timestamp-nanos",
    "local-timestamp-millis",
    "local-timestamp-micros",
    "local-timestamp-nanos",
}


def die(msg):
    print(f"confluent_produce.py: {msg}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------- JSON -> fastavro values


class Coercer:
    """Converts JSON-decoded values into what fastavro writes for a schema."""

    def __init__(self, schema, imported=()):
        self.named = {}
        for s in imported:
            self._collect(s, None)
        self._collect(schema, None)
        self.schema = schema

    def _fullname(self, name, namespace):
        if "." in name or not namespace:
            return name
        return f"{namespace}.{name}"

    def _collect(self, s, ns):
        # Register named types (record/enum/fixed) by full and short name.
        if isinstance(s, list):
            for b in s:
                self._collect(b, ns)
        elif isinstance(s, dict):
            t = s.get("type")
            if t in ("record", "error", "enum", "fixed") and "name" in s:
                full = self._fullname(s["name"], s.get("namespace", ns))
                self.named[full] = s
                self.named.setdefault(full.rsplit(".", 1)[-1], s)
                ns = full.rsplit(".", 1)[0] if "." in full else None
            if t in ("record", "error"):
                for f in s.get("fields", []):
                    self._collect(f.get("type"), ns)
            elif t == "array":
                self._collect(s.get("items"), ns)
            elif t == "map":
                self._collect(s.get("values"), ns)
            elif isinstance(t, (dict, list)):
                self._collect(t, ns)

    def resolve(self, s):
        """Named references -> their definition; {"type": "int"} -> "int"."""
        while True:
            if isinstance(s, str):
                if s in PRIMITIVES:
                    return s
                if s in self.named:
                    s = self.named[s]
                    continue
                raise ValueError(f"unknown Avro type {s!r}")
            if isinstance(s, dict) and isinstance(s.get("type"), (dict, list)) and "logicalType" not in s:
                s = s["type"]
                continue
            if isinstance(s, dict) and s.get("type") in PRIMITIVES and len(s) == 1:
                return s["type"]
            return s

    @staticmethod
    def _kind(s):
        if isinstance(s, str):
            return s, None
        if isinstance(s, list):
            return "union", None
        return s.get("type"), s.get("logicalType")

    def fits(self, s, v):
        """Whether JSON value v can be written with (resolved) schema s."""
        s = self.resolve(s)
        kind, logical = self._kind(s)
        number = isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool)
        if kind == "null":
            return v is None
        if v is None:
            return False
        if kind == "boolean":
            return isinstance(v, bool)
        if kind in ("int", "long"):
            if logical in TIMESTAMP_LOGICAL or logical == "date":
                return (number and v == int(v)) or isinstance(v, str)
            return number and v == int(v)
        if kind in ("float", "double"):
            return number
        if kind == "string":
            return isinstance(v, str)
        if kind in ("bytes", "fixed"):
            if logical == "decimal":
                return number or isinstance(v, str)
            return isinstance(v, (str, bytes))
        if kind == "enum":
            return isinstance(v, str) and v in s.get("symbols", [])
        if kind in ("record", "error", "map"):
            return isinstance(v, dict)
        if kind == "array":
            return isinstance(v, list)
        if kind == "union":
            return any(self.fits(b, v) for b in s)
        return False

    def coerce(self, s, v, path="$"):
        s = self.resolve(s)
        kind, logical = self._kind(s)
        try:
            if kind == "union":
                return self._union(s, v, path)
            if v is None:
                return None
            if kind in ("record", "error"):
                if not isinstance(v, dict):
                    raise ValueError("expected an object")
                out = dict(v)
                for f in s.get("fields", []):
                    if f["name"] in v:
                        out[f["name"]] = self.coerce(f["type"], v[f["name"]], f"{path}.{f['name']}")
                return out
            if kind == "array":
                return [self.coerce(s["items"], x, f"{path}[{i}]") for i, x in enumerate(v)]
            if kind == "map":
                return {k: self.coerce(s["values"], x, f"{path}.{k}") for k, x in v.items()}
            if kind in ("bytes", "fixed") and logical == "decimal":
                d = decimal.Decimal(v) if isinstance(v, str) else decimal.Decimal(str(v))
                if not d.is_finite():
                    raise ValueError(f"decimal must be finite, got {v!r}")
                return d
            if kind in ("bytes", "fixed"):
                return v.encode("latin-1") if isinstance(v, str) else v
            if kind in ("int", "long"):
                if isinstance(v, str) and logical in TIMESTAMP_LOGICAL:
                    t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
                    if not logical.startswith("local-") and t.tzinfo is None:
                        t = t.replace(tzinfo=dt.timezone.utc)
                    return t
                if isinstance(v, str) and logical == "date":
                    return dt.date.fromisoformat(v)
                if isinstance(v, bool) or int(v) != v:
                    raise ValueError(f"expected an integer, got {v!r}")
                return int(v)
            if kind in ("float", "double"):
                return float(v)
            return v
        except (ValueError, TypeError, ArithmeticError, KeyError, AttributeError) as e:
            raise ValueError(f"{path}: {e}") from None

    def _branch_names(self, b):
        r = self.resolve(b)
        if isinstance(r, str):
            return {r}
        names = {r.get("type")}
        if "name" in r:
            names |= {r["name"], self._fullname(r["name"], r.get("namespace"))}
        return names

    def _union(self, branches, v, path):
        # Avro JSON union encoding {"branch name": value}, unless the object is
        # itself a value of a record/map branch (then it is taken as such).
        if isinstance(v, dict) and len(v) == 1:
            (name, inner), = v.items()
            direct = [b for b in branches if self._kind(self.resolve(b))[0] in ("record", "error", "map")]
            if not any(self.fits(b, v) and name not in self._branch_names(b) for b in direct):
                for b in branches:
                    if name in self._branch_names(b):
                        return self.coerce(b, inner, path)
        for b in branches:
            if self.fits(b, v):
                return self.coerce(b, v, path)
        raise ValueError(f"value {v!r} fits no branch of the union")


# --------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Produce JSON lines from stdin as Confluent-framed Avro (AvroSerializer).",
    )
    p.add_argument("--brokers", required=True, help="bootstrap.servers")
    p.add_argument("--registry", required=True,
                   help="Schema Registry base URL (Apicurio: http://HOST:PORT/apis/ccompat/v7)")
    p.add_argument("--user", help="registry basic-auth user")
    p.add_argument("--password", help="registry basic-auth password")
    p.add_argument("--topic", required=True)
    p.add_argument("--schema", action="append", required=True, metavar="FILE.avsc",
                   help="writer schema; repeat for several versions (select per line with \"_schema\": N)")
    p.add_argument("--subject", help="registry subject (default: <topic>-value)")
    p.add_argument("--reference", action="append", default=[], metavar="NAME=SUBJECT=FILE.avsc",
                   help="register FILE under SUBJECT first; schemas naming NAME refer to it")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--key-field", help="use the string value of this record field as the key")
    keys.add_argument("--key", help="literal key for every record")
    p.add_argument("--compatibility", default="NONE",
                   help="set the subject's compatibility level first (default NONE; '' to leave it)")
    p.add_argument("--normalize", action="store_true", help="normalize.schemas=True")
    p.add_argument("--print-ids", action="store_true",
                   help="print 'schema I id ID version V subject S' for each --schema before 'produced N'")
    p.add_argument("--flush-timeout", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("-X", dest="extra", action="append", default=[], metavar="PROP=VALUE",
                   help="extra librdkafka producer property, e.g. -X security.protocol=SSL")
    a = p.parse_args(argv)
    if (a.user is None) != (a.password is None):
        p.error("--user and --password go together")
    return a


def main(argv):
    a = parse_args(argv)
    subject = a.subject or f"{a.topic}-value"

    schemas = []
    for path in a.schema:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            parsed = json.loads(text)
        except (OSError, ValueError) as e:
            die(f"cannot read schema {path}: {e}")
        schemas.append((text, parsed))

    references = []  # (name, subject, text, parsed)
    for spec in a.reference:
        parts = spec.split("=", 2)
        if len(parts) != 3 or not all(parts):
            die(f"--reference wants NAME=SUBJECT=FILE, got {spec!r}")
        name, ref_subject, path = parts
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            references.append((name, ref_subject, text, json.loads(text)))
        except (OSError, ValueError) as e:
            die(f"cannot read reference {path}: {e}")
    sr_conf = {"url": a.registry}
    if a.user is not None:
        sr_conf["basic.auth.user.info"] = f"{a.user}:{a.password}"
    registry = SchemaRegistryClient(sr_conf)

    ser_conf = {
        "auto.register.schemas": True,
        "normalize.schemas": a.normalize,
        "use.latest.version": False,
        # Explicit: confluent-kafka >= 2.13 defaults to the ASSOCIATED strategy,
        # which asks the registry for associations first.
        "subject.name.strategy": lambda ctx, record_name: subject,
    }
    registered = []  # SchemaReference of each --reference, once registered

    def refs_of(text):
        return [r for r in registered if json.dumps(r.name) in text]

    def schema_of(text):
        return Schema(text, "AVRO", references=refs_of(text))

    try:
        for name, ref_subject, text, _ in references:
            rs = registry.register_schema_full_response(
                ref_subject, schema_of(text), normalize_schemas=a.normalize
            )
            version = rs.version
            if version is None:
                version = registry.lookup_schema(ref_subject, schema_of(text)).version
            registered.append(SchemaReference(name, ref_subject, version))
        if a.compatibility:
            try:
                registry.set_compatibility(subject_name=subject, level=a.compatibility)
            except SchemaRegistryError as e:
                if e.http_status_code != 404:
                    raise
                # Some registries (Apicurio) only accept a subject-level config
                # once the subject exists: register the first schema, then retry.
                registry.register_schema(subject, schema_of(schemas[0][0]), normalize_schemas=a.normalize)
                registry.set_compatibility(subject_name=subject, level=a.compatibility)
        ids = []
        for text, _ in schemas:
            rs = registry.register_schema_full_response(
                subject, schema_of(text), normalize_schemas=a.normalize
            )
            ids.append(rs.schema_id)
        serializers = [AvroSerializer(registry, schema_of(text), conf=ser_conf) for text, _ in schemas]
    except SchemaRegistryError as e:
        hint = ""
        if e.http_status_code == 404 and "/apis/ccompat/" not in a.registry:
            hint = " (Apicurio serves the Confluent API under /apis/ccompat/v7: include it in --registry)"
        die(f"schema registry {a.registry}: {e}{hint}")

    imported = [parsed for _, _, _, parsed in references]
    coercers = [Coercer(parsed, imported) for _, parsed in schemas]
    key_ser = StringSerializer("utf_8")

    conf = {
        "bootstrap.servers": a.brokers,
        # Same partition as Java's default partitioner for non-null keys.
        "partitioner": "murmur2_random",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
    }
    for kv in a.extra:
        k, sep, v = kv.partition("=")
        if not sep:
            die(f"-X wants PROP=VALUE, got {kv!r}")
        conf[k] = v
    producer = Producer(conf)

    errors = []
    delivered = [0]

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")
        else:
            delivered[0] += 1

    vctx = SerializationContext(a.topic, MessageField.VALUE)
    kctx = SerializationContext(a.topic, MessageField.KEY)
    sent = 0
    for lineno, line in enumerate(sys.stdin, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            rec = json.loads(line, parse_float=decimal.Decimal)
            if not isinstance(rec, dict):
                raise ValueError("a line must be a JSON object")
            idx = rec.pop("_schema", 0)
            if not isinstance(idx, int) or not 0 <= idx < len(schemas):
                raise ValueError(f"_schema must be an index 0..{len(schemas) - 1}, got {idx!r}")
            if "_key" in rec:
                key = rec.pop("_key")
                if key is not None and not isinstance(key, str):
                    key = json.dumps(key)
            elif a.key_field:
                if rec.get(a.key_field) is None:
                    raise ValueError(f"key field {a.key_field!r} missing or null")
                kv = rec[a.key_field]
                key = kv if isinstance(kv, str) else str(kv)
            else:
                key = a.key
            value = serializers[idx](coercers[idx].coerce(coercers[idx].schema, rec), vctx)
        except SchemaRegistryError as e:
            die(f"line {lineno}: schema registry: {e}")
        except Exception as e:  # serialisation problems of every kind
            die(f"line {lineno}: {type(e).__name__}: {e}")
        while True:
            try:
                producer.produce(a.topic, key=key_ser(key, kctx), value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        sent += 1

    remaining = producer.flush(a.flush_timeout)
    if remaining:
        errors.append(f"{remaining} message(s) still undelivered after {a.flush_timeout}s")
    if errors:
        for e in errors[:20]:
            print(f"confluent_produce.py: delivery failed: {e}", file=sys.stderr)
        sys.exit(1)
    if delivered[0] != sent:
        die(f"sent {sent} but {delivered[0]} delivered")

    if a.print_ids:
        for i, sid in enumerate(ids):
            try:
                version = registry.lookup_schema(subject, Schema(schemas[i][0], "AVRO"),
                                                 normalize_schemas=a.normalize).version
            except SchemaRegistryError:
                version = "?"
            print(f"schema {i} id {sid} version {version} subject {subject}")
    print(f"produced {sent}")


if __name__ == "__main__":
    main(sys.argv[1:])
