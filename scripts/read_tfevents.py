#!/usr/bin/env python3
"""Reads TensorBoard event files with the standard library only, as an independent check of
autoif's writer: TFRecord framing (uint64 length, masked CRC32C of it, the record, masked
CRC32C of the record), then tensorflow.Event / Summary / Summary.Value decoded field by field.

Prints one JSON object per line: {"file_version": ...} for the header record, then
{"step", "wall_time", "tag", "value"} for each scalar. Exits 1, naming the offset, on a bad CRC
or a truncated record."""
import json
import struct
import sys


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf):
    """Yields (field number, wire type, value) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        yield num, wt, v


def records(path):
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off < len(data):
        if off + 12 > len(data):
            raise ValueError("%s: truncated header at offset %d" % (path, off))
        hdr = data[off:off + 8]
        (n,) = struct.unpack("<Q", hdr)
        (crc,) = struct.unpack("<I", data[off + 8:off + 12])
        if crc != masked(hdr):
            raise ValueError("%s: bad length CRC at offset %d" % (path, off))
        body = data[off + 12:off + 12 + n]
        if len(body) != n or off + 16 + n > len(data):
            raise ValueError("%s: truncated record at offset %d" % (path, off))
        (crc,) = struct.unpack("<I", data[off + 12 + n:off + 16 + n])
        if crc != masked(body):
            raise ValueError("%s: bad data CRC at offset %d" % (path, off))
        yield body
        off += 16 + n


def main(paths):
    for path in paths:
        for rec in records(path):
            step, wall, version, values = 0, 0.0, None, []
            for num, wt, v in fields(rec):
                if num == 1 and wt == 1:
                    (wall,) = struct.unpack("<d", v)
                elif num == 2 and wt == 0:
                    step = v - (1 << 64) if v >= 1 << 63 else v
                elif num == 3 and wt == 2:
                    version = v.decode()
                elif num == 5 and wt == 2:
                    for vn, vwt, val in fields(v):
                        if vn != 1 or vwt != 2:
                            continue
                        tag, simple = None, None
                        for fn, fwt, fv in fields(val):
                            if fn == 1 and fwt == 2:
                                tag = fv.decode()
                            elif fn == 2 and fwt == 5:
                                (simple,) = struct.unpack("<f", fv)
                        values.append((tag, simple))
            if version is not None:
                print(json.dumps({"file_version": version, "wall_time": wall}))
            for tag, simple in values:
                print(json.dumps({"step": step, "wall_time": wall, "tag": tag, "value": simple}))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (OSError, ValueError) as e:
        print("read_tfevents: %s" % e, file=sys.stderr)
        sys.exit(1)
