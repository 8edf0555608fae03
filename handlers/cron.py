"""Scheduled jobs: the daily certificate expiry check."""

import json
import logging

import models
from handlers.api import ApiHandler

log = logging.getLogger("dyncert.expiry")


class Expiry(ApiHandler):
    """GET /cron/expiry: log a structured warning per expired or expiring identity, and per stale pending key."""

    public = True  # checked below: App Engine cron, or an admin

    def get(self):
        # App Engine strips X-Appengine-Cron from outside requests; elsewhere anyone could send it.
        from_cron = self.settings.on_app_engine and self.request.headers.get("X-Appengine-Cron") == "true"
        if not from_cron and self.principal is None:
            return self.refuse(self.auth_method)
        days = self.request.get("days", "30")
        report = models.expiry_report(warn_days=int(days) if days.isdigit() else 30)
        for state in ("expired", "expiring"):
            for entry in report[state]:
                log.warning(json.dumps(dict(entry, event="certificate_" + state)))
        for entry in report["stale_pending"]:  # a CSR nobody answered: its key waits, sealed, for nothing
            log.warning(json.dumps(dict(entry, event="pending_key_stale")))
        self.write_json(report)
