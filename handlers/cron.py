"""Scheduled jobs: the daily certificate expiry check."""

import json
import logging
import re

import sessions
from handlers.api import ApiHandler
from handlers.base import ApiError
from models.expiry import expiry_report

log = logging.getLogger("dyncert.expiry")
MAX_DAYS = 3650  # ten years ahead is already every certificate


class Expiry(ApiHandler):
    """GET /cron/expiry: warn per expired or expiring identity and stale pending key; purge idle session data."""

    public = True  # checked below: App Engine cron, or an admin

    def get(self):
        # App Engine strips X-Appengine-Cron from outside requests; elsewhere anyone could send it.
        from_cron = self.settings.on_app_engine and self.request.headers.get("X-Appengine-Cron") == "true"
        if not from_cron and self.principal is None:
            return self.refuse(self.auth_method)
        days = self.request.get("days", "30")
        if not re.fullmatch(r"[0-9]{1,4}", days) or int(days) > MAX_DAYS:  # ASCII digits, a sane range
            raise ApiError(400, "invalid_request", f"'days' must be a whole number from 0 to {MAX_DAYS}.")
        report = expiry_report(warn_days=int(days))
        sessions.purge_expired()  # daily: ended sessions nobody presented again
        sessions.purge_idle_attempts()  # and sign-in counters of addresses long silent (one per attacker address)
        for state in ("expired", "expiring"):
            for entry in report[state]:
                log.warning(json.dumps(dict(entry, event="certificate_" + state)))
        for entry in report["stale_pending"]:  # a CSR nobody answered: its key waits, sealed, for nothing
            log.warning(json.dumps(dict(entry, event="pending_key_stale")))
        self.write_json(report)
