# Sourced by the CLI test scripts. png_pixels FILE prints the SHA-256 of a PNG's decompressed pixel
# rows: two PNGs whose text chunks differ (prompt, parameters) compare equal when their pixels do.
png_pixels() { python3 -c '
import struct, sys, zlib, hashlib
d = open(sys.argv[1], "rb").read(); i = 8; idat = b""
while i < len(d):
    n = struct.unpack(">I", d[i:i + 4])[0]
    if d[i + 4:i + 8] == b"IDAT": idat += d[i + 8:i + 8 + n]
    i += 12 + n
print(hashlib.sha256(zlib.decompress(idat)).hexdigest())' "$1"; }
