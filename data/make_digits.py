#!/usr/bin/env python3
"""Convert scikit-learn's copy of the UCI optical digits into data/digits.bin.

Usage:
    pip download --no-deps --only-binary=:all: scikit-learn -d /tmp/skl
    python3 data/make_digits.py /tmp/skl/scikit_learn-*.whl        # or a digits.csv.gz

The input is sklearn/datasets/data/digits.csv.gz (inside the wheel, or extracted):
1,797 lines of 65 integers, 64 pixels (0..16, row-major 8x8) then the label (0..9).

Output layout (all integers little-endian), read by src/data/digits.rs:
    offset  size        field
    0       8           magic b"HGDIGIT1"
    8       4           u32 samples  (1797)
    12      4           u32 features (64)
    16      4           u32 classes  (10)
    20      4           u32 reserved (0)
    24      N*64        u8 pixels, sample-major, each 0..16
    24+N*64 N           u8 labels, each 0..9
Samples keep the CSV's order, so the documented split (first 1,437 train, last 360 test)
is the same as sklearn's train_test_split(X, y, test_size=0.2, shuffle=False).

Standard library only; no scikit-learn install needed.
"""

import gzip
import hashlib
import struct
import sys
import zipfile
from pathlib import Path

MEMBER = "sklearn/datasets/data/digits.csv.gz"
FEATURES, CLASSES, SAMPLES = 64, 10, 1797


def read_csv_gz(path: Path) -> bytes:
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return gzip.decompress(wheel.read(MEMBER))
    return gzip.decompress(path.read_bytes())


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    source = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).with_name("digits.bin")

    csv = read_csv_gz(source)
    rows = [line.split(",") for line in csv.decode("ascii").splitlines() if line.strip()]
    assert len(rows) == SAMPLES, f"expected {SAMPLES} rows, got {len(rows)}"

    pixels, labels = bytearray(), bytearray()
    for i, row in enumerate(rows):
        values = [float(v) for v in row]
        assert len(values) == FEATURES + 1, f"row {i}: {len(values)} columns"
        assert all(v == int(v) for v in values), f"row {i}: non-integer value"
        px, label = [int(v) for v in values[:-1]], int(values[-1])
        assert all(0 <= p <= 16 for p in px), f"row {i}: pixel outside 0..16"
        assert 0 <= label < CLASSES, f"row {i}: label {label}"
        pixels.extend(px)
        labels.append(label)

    blob = b"HGDIGIT1" + struct.pack("<4I", SAMPLES, FEATURES, CLASSES, 0) + pixels + labels
    out.write_bytes(blob)
    print(f"source csv sha256 {hashlib.sha256(csv).hexdigest()}")
    print(f"wrote {out} ({len(blob)} bytes) sha256 {hashlib.sha256(blob).hexdigest()}")


if __name__ == "__main__":
    main()
