"""View-models of the admin pages: rows, expiry status, slots, last calls and what an identity trusts."""

import datetime
import re
import urllib.parse

from dyncert import context, csr
from models.entities import has_current
from models.lifecycle import history
from models.views import identity_view, pending_summary, public_view, rfc3339

UTC = datetime.timezone.utc
WARN_DAYS = 30  # an identity this close to expiry is flagged on the list
TLS_VERSIONS = (("TLS", "TLS 1.2 or 1.3 (default)"), ("TLSv1_2", "TLS 1.2 only"), ("TLSv1_3", "TLS 1.3 only"))
# The stored setting in words ("TLS" alone read as "TLS version: TLS").
TLS_LABELS = {"TLS": "TLS 1.2 or 1.3", "TLSv1_2": "TLS 1.2 only", "TLSv1_3": "TLS 1.3 only"}


def default_trust(settings):
    """What an identity without its own CA bundle trusts, in words (as the home page says it)."""
    if settings.ca_file:
        return f"the app's CA file ({settings.ca_file})"
    trust = context.default_trust()
    where = " and ".join(filter(None, (trust["cafile"], trust["capath"] and f"hashed directory {trust['capath']}")))
    return f"the system's trust store ({where})" if where else "the system's trust store"


def trusted_by(has_ca_certs, settings):
    """What one identity's calls trust: its own CA bundle when stored, else the default."""
    return "the CA bundle stored with this identity" if has_ca_certs else default_trust(settings)


def detail_url(employee, address):
    """The detail page of one identity."""
    return f"/admin/employees/{urllib.parse.quote(str(employee), safe='')}/addresses/{address}"


def expiry(not_before, not_after, now=None):
    """Validity status of a certificate: state, label and percent of its window elapsed (5% steps)."""
    now = now or datetime.datetime.now(UTC)
    total = (not_after - not_before).total_seconds()
    elapsed = (now - not_before).total_seconds()
    fraction = min(1.0, max(0.0, elapsed / total)) if total > 0 else 1.0
    percent = int(round(fraction * 20)) * 5
    remaining = not_after - now
    if remaining.total_seconds() <= 0:
        days = (-remaining).days
        label, state = "expired", "expired"
        detail = "expired today" if days == 0 else f"expired {days} day{'s' if days != 1 else ''} ago"
    elif elapsed < 0:
        label, state, detail = "not yet valid", "future", f"valid from {rfc3339(not_before)}"
    elif remaining <= datetime.timedelta(days=WARN_DAYS):
        days = remaining.days
        label = "expires today" if days == 0 else f"expires in {days} day{'s' if days != 1 else ''}"
        state, detail = "expiring", f"until {rfc3339(not_after)}"
    else:
        label, state, detail = "valid", "valid", f"until {rfc3339(not_after)}"
    return {"state": state, "label": label, "detail": detail, "percent": percent}


def row(entity, now=None):
    """The public view of an entity with its expiry status and page URL (also without a current identity)."""
    view = public_view(entity)
    current = has_current(entity)
    view["has_current"] = current
    view["expiry"] = expiry(entity.not_before, entity.not_after, now) if current else None
    view["holds"] = None if current else holdings(entity)
    view["shown"] = shown_slot(entity)
    view["url"] = detail_url(view["employee"], view["address"])
    view["tls_label"] = TLS_LABELS.get(view["tls_version"] or "TLS", view["tls_version"])
    return view


def holdings(entity):
    """What an address without a current identity holds, in words: 'no current identity: next staged'."""
    held = [name for name, slot in (("next staged", entity.next), ("pending key", entity.pending)) if slot]
    return "no current identity" + (": " + ", ".join(held) if held else "")


def shown_slot(entity):
    """What the list shows for an address: its current identity, else its next, else its pending key's request."""
    slot = entity if has_current(entity) else entity.next
    if slot is not None:
        return {"subject": slot.subject, "key_type": slot.key_type, "host": slot.host, "port": slot.port,
                "server_hostname": slot.server_hostname, "fingerprint_sha256": slot.fingerprint_sha256}
    pending = entity.pending
    return {"subject": pending.subject if pending else None, "key_type": pending.key_type if pending else None,
            "host": None, "port": None, "server_hostname": None, "fingerprint_sha256": None}


def target_query(employee, address, slot, **extra):
    """The upload form's query: the address and, when there is one, the slot's target (never 'None')."""
    query = {"employee": employee, "address": address}
    if slot is not None:
        query.update(host=slot.host or "", port=slot.port or "", server_hostname=slot.server_hostname or "",
                     tls_version=slot.tls_version or "TLS")
    return "/admin/new?" + urllib.parse.urlencode(dict(query, **extra))


def matches(entity, query):
    """True when `query` (case-insensitive) is in the identity's name, subject, issuer, target or fingerprint."""
    if not query:
        return True
    haystack = " ".join(str(v or "") for v in (
        f"{entity.key.parent().id()}/{entity.key.id()}", entity.subject, entity.issuer, entity.host,
        f"{entity.host}:{entity.port}", entity.server_hostname, entity.fingerprint_sha256,
        *(shown_slot(entity).values()), entity.pending and entity.pending.subject))
    return query.lower() in haystack.lower()


def ago(moment, now):
    """'just now', '5 min ago', '3 h ago', '2 days ago'."""
    seconds = (now - moment).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"


def answered_status(status):
    """True for an HTTP status outside 2xx/3xx: the call worked, but the partner said no (amber, never green)."""
    return status is not None and not 200 <= status < 400


def call_verdict(kind, data):
    """How the page shows a call that worked: passed (green), or answered (amber: 'the partner answered 403')."""
    status = data.get("status") if kind == "request" else None
    if answered_status(status):
        return {"state": "answered", "label": f"the partner answered {status}"}
    return {"state": "passed", "label": None}


def last_result(record, now):
    """The list page's view of a LastCall record, or None; `state` ok, answered (a 4xx/5xx) or failed."""
    if record is None:
        return None
    what = record.call + (f" {record.status}" if record.status else "")
    ok = record.outcome == "ok"
    state = "failed" if not ok else "answered" if answered_status(record.status) else "ok"
    label = f"answered {record.status}" if state == "answered" else record.outcome
    return {"ok": ok, "state": state, "label": label, "outcome": record.outcome, "what": what,
            "at": rfc3339(record.at), "ago": ago(record.at, now)}


def slot_row(entity, slot, now=None):
    """A next or previous slot's public view with its expiry status (None when the slot is empty)."""
    if slot is None:
        return None
    view = identity_view(entity.key, slot)
    view["expiry"] = expiry(slot.not_before, slot.not_after, now)
    view["staged"] = rfc3339(slot.staged)
    return view


def lifecycle_values(entity, lifecycle):
    """What the detail page shows about rotation: slots, pending key and CSR, history, form state."""
    now = datetime.datetime.now(UTC)
    pending = entity.pending
    return {"next": slot_row(entity, entity.next, now), "previous": slot_row(entity, entity.previous, now),
            "pending": pending_summary(pending), "csr_pem": pending.csr_pem if pending else None,
            "history": history(entity.key.parent().id(), entity.key.id()), "key_types": csr.KEY_TYPES,
            "csr_form": lifecycle.get("csr_form") or {"key_type": csr.DEFAULT_KEY_TYPE, "CN": common_name(
                entity.subject or (entity.next and entity.next.subject) or (pending and pending.subject))},
            "lifecycle_error": lifecycle.get("error"), "lifecycle_saved": lifecycle.get("saved"),
            "csr_open": "csr_form" in lifecycle,  # the folded CSR form opens again to show its error
            "next_form": lifecycle.get("next_form") or {}}


def common_name(subject):
    """The CN of a subject, RFC 4514 or openssl order (a default for the next CSR), or ''."""
    match = re.search(r"(?:^|,)\s*CN=((?:[^,\\]|\\.)*)", subject or "")
    return match.group(1).replace("\\", "") if match else ""
