#!/usr/bin/env python3
"""Writes the nasty usage-event records of this corpus, each named <what>.<expected code>.bin.

Run from this directory: python3 make_corpus.py. The files are committed; this script only
documents how each was built. tests/decode_fuzz.rs decodes every *.bin here and expects the
code in its name.
"""

import struct


def long(v):
    """An Avro long: zig-zag, then a base-128 varint."""
    n = ((v << 1) ^ (v >> 63)) & ((1 << 64) - 1)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return long(len(b)) + b


def header(schema_id):
    return b"\x00" + struct.pack(">I", schema_id)


EVENT_ID = "6f1c2c1e-8a44-4c1f-9d3e-2b7a9c0d4e5f"


def prefix(schema_id=3, tenant=string("acme"), event_id=string(EVENT_ID), event_time=long(1_764_000_000_123),
           department=long(1) + string("research"), cache_1h=long(0)):
    """Every field before `labels`, v2 (schema 3) or v1 (schema 1)."""
    out = header(schema_id) + event_id + event_time + tenant + department
    out += long(0) * 4  # user_id, project_id, feature, environment: null
    out += string("anthropic") + string("claude-sonnet-4-5")
    for tokens in (1200, 300, 50, 0, 20):
        out += long(tokens)
    if schema_id == 3:
        out += cache_1h
    out += long(0) * 3  # request_id, trace_id, span_name: null
    return out


def labels(*pairs):
    if not pairs:
        return long(0)
    return long(len(pairs)) + b"".join(string(k) + string(v) for k, v in pairs) + long(0)


FILES = {
    # The outside client's record: a labels block claiming 2^29 entries, 116 bytes in all.
    "labels_2pow29_v2.avro_bounds_exceeded": prefix() + long(1 << 29) + string("k") + string("v") + long(0),
    "labels_2pow29_v1.avro_bounds_exceeded": prefix(1) + long(1 << 29) + string("region") + string("eu") + long(0),
    # A negative block count is followed by a byte size; both lie.
    "labels_negative_block_2pow29.avro_bounds_exceeded": prefix() + long(-(1 << 29)) + long(3) + string("k") + string("v") + long(0),
    "labels_i64_min_block.avro_bounds_exceeded": prefix() + long(-(1 << 63)) + long(3) + string("k") + string("v") + long(0),
    # 1025 blocks of one entry each: every block is small, their sum is over the limit.
    "labels_over_max_in_small_blocks.avro_bounds_exceeded": prefix() + b"".join(long(1) + string("k%d" % i) + string("") for i in range(1025)) + long(0),
    # Within the limit, but more entries than the bytes left could hold.
    "labels_block_beyond_bytes.undecodable_avro": prefix() + long(100) + string("k") + string("v") + long(0),
    "label_value_over_max_string.avro_bounds_exceeded": prefix() + labels(("k", "v" * 65537)),
    "tenant_len_2pow62.avro_bounds_exceeded": prefix(tenant=long(1 << 62) + b"acme") + labels(),
    "tenant_len_negative.undecodable_avro": prefix(tenant=long(-5) + b"acme") + labels(),
    "tenant_len_beyond_bytes.undecodable_avro": header(3) + string(EVENT_ID) + long(1) + long(100) + b"acme",
    "event_id_len_i64_max.avro_bounds_exceeded": prefix(event_id=long((1 << 63) - 1)) + labels(),
    "event_time_varint_11_bytes.undecodable_avro": prefix(event_time=b"\xff" * 10 + b"\x01") + labels(),
    "department_union_index_7.undecodable_avro": prefix(department=long(7)) + labels(),
    "department_union_index_negative.undecodable_avro": prefix(department=long(-1)) + labels(),
    "cache_1h_union_index_2.undecodable_avro": prefix(cache_1h=long(2) + long(5)) + labels(),
    "tenant_bad_utf8.undecodable_avro": prefix(tenant=string(b"ac\xff\xfe")) + labels(),
    "event_id_not_uuid.undecodable_avro": prefix(event_id=string("not-a-uuid-at-all-but-36-chars-long!")) + labels(),
    "header_only.undecodable_avro": header(3),
    "truncated_in_labels.undecodable_avro": (prefix() + labels(("region", "eu")))[:-3],
    "truncated_header.truncated_header": b"\x00\x00\x00",
    "bad_magic.bad_magic_byte": b"\x07" + prefix()[1:] + labels(),
    "unknown_schema.unknown_schema_id": header(77) + prefix()[5:] + labels(),
    "control_schema_id.wrong_subject": header(2) + prefix()[5:] + labels(),
    "trailing_garbage.trailing_bytes": prefix() + labels() + b"\x00\x00",
}

if __name__ == "__main__":
    for name, data in FILES.items():
        with open(name + ".bin", "wb") as f:
            f.write(data)
        print(f"{len(data):>7}  {name}.bin")
