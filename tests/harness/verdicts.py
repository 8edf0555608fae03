"""The verdict wait's bound, measured in the same call: did a refusal it missed really come after it (issue 23)?

A TLS 1.3 handshake can only wait so long for the server's verdict on our certificate (calls.verdict_wait).
On a busy machine a server may refuse later than that: the handshake then reports no verdict, which is
its documented behaviour, not a miss. `late_verdicts()` records, for each wait that ended without a
verdict, the wait and when the server's next bytes (its alert, or its close) actually arrived, without
consuming them, so a test can tell "too late for the bound" from "never seen".
"""

import contextlib
import select
import time

from dyncert import calls

LATE_BOUND = 30.0  # seconds to keep watching for a late answer (a refusal that never comes fails the test)


@contextlib.contextmanager
def late_verdicts():
    """Within the block, every verdict wait that ends with neither ticket nor alert appends {'wait', 'arrived'}:
    the seconds it waited and the seconds (from its start) after which the server's next bytes came (None: never)."""
    records = []
    original = calls._await_verdict

    def watched(sock, timeout, wait=calls.TICKET_WAIT):
        started = time.monotonic()
        result = original(sock, timeout, wait)
        if result[2] is False:
            readable, _, _ = select.select([sock], [], [], LATE_BOUND)  # its alert or close, left unread
            records.append({"wait": min(timeout, wait),
                            "arrived": time.monotonic() - started if readable else None})
        return result

    calls._await_verdict = watched
    try:
        yield records
    finally:
        calls._await_verdict = original


def only_late(records):
    """True if every recorded wait ended before the server answered, and the server did answer."""
    return all(r["arrived"] is not None and r["arrived"] >= r["wait"] for r in records)
