"""The expiry report the cron mails: expired and expiring identities, and pending keys left waiting."""

import datetime

from models.entities import UTC, Address
from models.views import rfc3339

PENDING_WARN_DAYS = 30  # a CSR unanswered this long was probably forgotten


def expiry_report(now=None, warn_days=30):
    """Identities already expired and those expiring within `warn_days`, soonest first, and stale pending keys.

    Each entry says whether a next identity is staged (`next_staged`: false means nothing is ready
    to promote); `stale_pending` lists keys generated more than PENDING_WARN_DAYS ago that still
    wait for their certificate.
    """
    now = now or datetime.datetime.now(UTC)
    horizon = now + datetime.timedelta(days=warn_days)
    report = {"expired": [], "expiring": [], "stale_pending": []}
    for entity in Address.query(Address.not_after <= horizon).order(Address.not_after).fetch():
        if entity.not_after is None:  # null sorts below every date: a pending-only address
            continue
        entry = {"identity": f"{entity.key.parent().id()}/{entity.key.id()}",
                 "subject": entity.subject, "not_after": rfc3339(entity.not_after),
                 "days_left": (entity.not_after - now).days, "next_staged": entity.next is not None}
        report["expired" if entity.not_after <= now else "expiring"].append(entry)
    stale = now - datetime.timedelta(days=PENDING_WARN_DAYS)
    for entity in Address.query(Address.pending_created <= stale).order(Address.pending_created).fetch():
        if entity.pending is None or entity.pending_created is None:
            continue
        report["stale_pending"].append({
            "identity": f"{entity.key.parent().id()}/{entity.key.id()}", "subject": entity.pending.subject,
            "created": rfc3339(entity.pending_created), "days_pending": (now - entity.pending_created).days})
    return report
