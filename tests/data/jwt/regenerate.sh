#!/usr/bin/env bash
# Regenerates the TEST-ONLY keys of this folder (see README.md). Needs openssl and python3.
set -euo pipefail
cd "$(dirname "$0")"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa-private.pem
openssl pkey -in rsa-private.pem -pubout -out rsa-public.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec-private.pem
openssl pkey -in ec-private.pem -pubout -out ec-public.pem
python3 - <<'PY'
import base64, json, re, subprocess

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def text(pem):
    return subprocess.run(["openssl", "pkey", "-pubin", "-in", pem, "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout

def hexblock(t, label):
    m = re.search(label + r":\s*\n((?:\s+[0-9a-f:]+\n)+)", t)
    return bytes.fromhex(re.sub(r"[\s:]", "", m.group(1)))

rsa = text("rsa-public.pem")
n = hexblock(rsa, "Modulus").lstrip(b"\x00")
e = int(re.search(r"Exponent: (\d+)", rsa).group(1))
ec = text("ec-public.pem")
pt = hexblock(ec, "pub")
assert "prime256v1" in ec and len(pt) == 65 and pt[0] == 4
keys = [
    {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": b64(n),
     "e": b64(e.to_bytes((e.bit_length() + 7) // 8, "big"))},
    {"kty": "EC", "kid": "ec1", "use": "sig", "alg": "ES256", "crv": "P-256",
     "x": b64(pt[1:33]), "y": b64(pt[33:])},
]
with open("jwks.json", "w") as f:
    json.dump({"keys": keys}, f, indent=2)
    f.write("\n")
PY
