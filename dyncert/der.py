"""A tiny DER reader and writer: enough to look inside keys and PKCS#12 before OpenSSL touches them."""

import base64


def item(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER item at `pos`; ValueError if malformed."""
    if pos + 2 > len(data):
        raise ValueError("short")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("overrun")
    return tag, pos, pos + length


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, bytes]]:
    """[(tag, content start, content end, whole item bytes)] of the items in data[start:end]."""
    out, pos = [], start
    while pos < end:
        tag, cs, ce = item(data, pos)
        if ce > end:
            raise ValueError("overrun")
        out.append((tag, cs, ce, data[pos:ce]))
        pos = ce
    return out


def tlv(tag: int, content: bytes) -> bytes:
    """One DER item: tag, definite length, content."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def pem(label: bytes, der_bytes: bytes) -> bytes:
    """PEM text of `der_bytes` under `label` (bytes), 64 columns like OpenSSL."""
    body = base64.b64encode(der_bytes)
    lines = b"\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN " + label + b"-----\n" + lines + b"\n-----END " + label + b"-----\n"


def unpem(block: bytes) -> bytes:
    """DER bytes of one PEM block (headers such as Proc-Type are not expected here)."""
    lines = block.strip().splitlines()
    return base64.b64decode(b"".join(line for line in lines if not line.startswith(b"-----")), validate=False)
