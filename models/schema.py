"""The fields each JSON body may hold (API.md "Strict bodies"): an unknown one, at any level, is refused by name."""

import difflib

from dyncert.errors import InputError

FREE = "free"  # an object whose keys are the caller's own (request headers)

# kms_key (PUT) and key_location (csr) are known names: the Cloud KMS part of the app gives them meaning.
UPLOAD = dict.fromkeys(("cert", "key", "key_password", "pkcs12", "pkcs12_password", "ca_certs", "host", "port",
                        "server_hostname", "tls_version", "kms_key"))
CSR = {"key_type": None, "subject": dict.fromkeys(("CN", "O", "OU", "C", "ST", "L")),
       "san": dict.fromkeys(("dns", "email", "uri")), "key_location": None}
REQUEST = {"method": None, "path": None, "headers": FREE, "body": None}
ECHO = {"send": None}
FETCH = {"url": None}
EMPTY = {}  # handshake, promote, rollback: no fields


def nearest(name, known):
    """The known field `name` most likely meant (case, then difflib, then a prefix), or None."""
    by_lower = {k.lower(): k for k in known}
    low = name.lower()
    if low in by_lower:
        return by_lower[low]
    close = difflib.get_close_matches(low, by_lower, n=1, cutoff=0.6)
    if close:
        return by_lower[close[0]]
    prefixed = sorted((k for lk, k in by_lower.items() if lk.startswith(low) or low.startswith(lk)), key=len)
    if prefixed:
        return prefixed[0]
    close = difflib.get_close_matches(low, by_lower, n=1, cutoff=0.4)
    return by_lower[close[0]] if close else None


def unknown_field(path, name, known):
    """invalid_request naming the unknown field and the nearest known one (e.g. "ca" for "ca_certs")."""
    shown = path + name
    guess = nearest(name, known)
    if guess is not None:
        hint = f'(did you mean "{path + guess}"?)'
    elif known:
        hint = "(known: " + ", ".join(f'"{path + k}"' for k in known) + ")"
    else:
        hint = "(this route takes no fields)"
    return InputError("invalid_request", f'unknown field "{shown}" {hint}; nothing was done.', shown)


def check_fields(body, known, path=""):
    """Raise invalid_request for the first field of `body` (a JSON object) not in `known`, at any level."""
    for name, value in body.items():
        if name not in known:
            raise unknown_field(path, name, known)
        inner = known[name]
        if isinstance(inner, dict) and isinstance(value, dict):  # other types: checked where they are used
            check_fields(value, inner, f"{path}{name}.")
