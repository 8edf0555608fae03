"""The one key filter: private key material is removed from every value a page shows (templating's finalize)."""

import base64
import binascii
import re

from markupsafe import Markup

# A private key PEM block of any label (PRIVATE KEY, RSA/EC/DSA/ENCRYPTED/OPENSSH PRIVATE KEY), complete
# or cut short at its end: its BEGIN line to its END line or to the end of the text.
PEM_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S)
# An END line left by a block cut short at its start; the key lines above it are removed too.
PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")
KEY_LINE = re.compile(r"[A-Za-z0-9+/=]*|[A-Za-z-]+: [A-Za-z0-9,-]*")  # base64, or Proc-Type / DEK-Info
# Base64 without armour, long enough to hold a key (the shortest, an Ed25519 PKCS#8, is 64 characters).
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{60,}={0,2}")
HINTS = ("PRIVATE KEY", "MII", "MC4", "MFM", "MHc", "MIG")  # DER SEQUENCE openings of keys and PFX files

# A piece of base64 long enough (96 bits) never to be in a page by chance when it is also in a pasted key.
WINDOW = 16
FRAGMENT = re.compile(r"[A-Za-z0-9+/]{%d,}" % WINDOW)
MAX_PASTED = 64 * 1024  # key text remembered per request (many keys; the windows stay a few MB at most)

MAX_FORM_READ = 640 * 1024  # above the admin forms' 512 KiB: such a post was refused unread (413)

REMOVED = "[private key removed]"


def without_private_keys(value, pasted=""):
    """`value` with every private key in it replaced by a marker, and every piece of base64 found in
    `pasted` (the keys of the request, see pasted_keys) removed: a cut or quoted part of a key pasted
    into the wrong field is not shown either. Other values, Markup included, stay as they are."""
    if not isinstance(value, str) or not (pasted or any(hint in value for hint in HINTS)):
        return value  # the fast path: almost every value on a page
    text = _without_cut_starts(PEM_BLOCK.sub(REMOVED, str(value)))
    text = BASE64_RUN.sub(lambda m: REMOVED if _is_key_der(m.group(0)) else m.group(0), text)
    if pasted:
        text = FRAGMENT.sub(lambda m: REMOVED if _holds_window(m.group(0), pasted) else m.group(0), text)
    return Markup(text) if isinstance(value, Markup) else text


def pasted_keys(texts):
    """Every 16-character piece of the private keys (PEM blocks, whole or cut, and base64 keys) in `texts`.

    An empty set when there are none (the usual case). Pieces, not the keys: a part of a key quoted
    in an error message or cut short by a page must not be shown either.
    """
    found, size = [], 0
    for text in texts:
        if not isinstance(text, str) or not any(hint in text for hint in HINTS):
            continue
        found += PEM_BLOCK.findall(text)
        found += [text[span] for span in _cut_starts(text)]
        found += [run for run in BASE64_RUN.findall(text) if _is_key_der(run)]
    windows = set()
    for key_text in found:
        for run in FRAGMENT.findall(key_text):
            size += len(run)
            if size > MAX_PASTED:
                return frozenset(windows)
            windows.update(run[i:i + WINDOW] for i in range(len(run) - WINDOW + 1))
    return frozenset(windows)


def request_keys(request):
    """pasted_keys of a WebOb request's query and form text fields (a body too large to be a form: none read)."""
    texts = []
    try:
        texts += request.GET.values()
        if (request.content_length or 0) <= MAX_FORM_READ:
            texts += [value for value in request.POST.values() if isinstance(value, str)]
    except Exception:  # text WebOb cannot decode (the page refusing it is being rendered): none of it is shown
        pass
    return pasted_keys(texts)


def _holds_window(run, windows):
    return any(run[i:i + WINDOW] in windows for i in range(len(run) - WINDOW + 1))


def _cut_starts(text):
    """Spans of blocks cut short at their start: an END line left alone and the key lines just above it."""
    done = 0
    for end in PEM_END.finditer(text):
        begin = end.start()
        while begin > done:  # walk back line by line (each character once): no quadratic regex
            line_start = max(text.rfind("\n", done, begin - 1) + 1, done)
            if not KEY_LINE.fullmatch(text[line_start:begin].strip()):
                break
            begin = line_start
        yield slice(begin, end.end())
        done = end.end()


def _without_cut_starts(text):
    """Remove each END line left alone, with the key lines just above it (one pass: linear in the text)."""
    pieces, done = [], 0
    for span in _cut_starts(text):
        pieces += [text[done:span.start], REMOVED]
        done = span.stop
    return "".join(pieces) + text[done:]


def _is_key_der(run):
    """True when the base64 run decodes to a private key (PKCS#8, PKCS#1, SEC 1, encrypted) or a PKCS#12 file."""
    try:
        der = base64.b64decode(run[:len(run) - len(run) % 4] if not run.endswith("=") else run)
    except (binascii.Error, ValueError):
        return False
    return _looks_like_key(der)


def _looks_like_key(der):
    """A DER SEQUENCE whose first element is INTEGER 0, 1 or 3 (key versions, PFX v3), or a SEQUENCE (encrypted PKCS#8)."""
    body = _sequence_body(der)
    if body is None:
        return False
    if body[:3] in (b"\x02\x01\x00", b"\x02\x01\x01", b"\x02\x01\x03"):
        return True
    inner = _sequence_body(body)  # EncryptedPrivateKeyInfo: SEQUENCE { AlgorithmIdentifier, OCTET STRING }
    return inner is not None and inner[:2] == b"\x06\x09" and inner[2:10] == b"\x2a\x86\x48\x86\xf7\x0d\x01\x05"


def _sequence_body(der):
    """The content of a DER SEQUENCE at the start of `der` (possibly cut short), or None."""
    if len(der) < 4 or der[0] != 0x30:
        return None
    if der[1] < 0x80:
        return der[2:]
    count = der[1] & 0x7F
    return der[2 + count:] if 1 <= count <= 3 else None
