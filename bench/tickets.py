"""TLS 1.3 servers with and without session tickets: what handshake()'s wait for a verdict costs.

A server that sends no ticket gives no sign that it accepted our certificate; handshake() waits
a small multiple of the server's answer time for an alert instead of a fixed 0.5 s. Both peers are
`openssl s_server -Verify 1 -verify_return_error -tls1_3`, one with `-num_tickets 0`; calls are timed with reuse off
(both do full handshakes: the wait is the only difference) and with reuse on (as the app runs:
only the ticketing server can resume).
"""

from dyncert import calls
from dyncert.targets import Target

from . import paths, peers, timing


class NoTicketSServer(peers.SServer):
    """`openssl s_server -Verify 1 -verify_return_error -tls1_3 -num_tickets 0`: accepts, and says nothing after the handshake."""

    def __init__(self, pki):
        super().__init__(pki, "1.3")
        self.args += ["-num_tickets", "0"]
        self.log_path = pki.path("s_server-no-tickets.log")


def run(p, rounds, duration, log):
    """Rates of calls.handshake() against both peers, reuse off and on; {samples, summary, verdicts}."""
    hs = paths.Paths(p, 0, [])
    ctx = hs.warm_context()
    verdicts = {}

    def op(name, port, enabled):
        def call():
            with paths.reuse_switched(enabled):
                result = calls.handshake(ctx, Target("127.0.0.1", port, paths.SNI), hs.identity.fingerprint_sha256,
                                         timeouts=paths.TIMEOUTS)
            verdicts[name] = "no verdict (waited)" if result["note"] == calls.NO_VERDICT_NOTE else "verdict"
        return timing.timed(call)

    with peers.SServer(p, "1.3") as ticketing, NoTicketSServer(p) as silent:
        for port in (ticketing.port, silent.port):  # as in the app, a first call learns whether it issues tickets
            calls.handshake(ctx, Target("127.0.0.1", port, paths.SNI), hs.identity.fingerprint_sha256,
                            timeouts=paths.TIMEOUTS)
        ops = {"tickets_full": op("tickets_full", ticketing.port, False),
               "no_tickets_full": op("no_tickets_full", silent.port, False),
               "tickets_reuse": op("tickets_reuse", ticketing.port, True),
               "no_tickets_reuse": op("no_tickets_reuse", silent.port, True)}
        samples = timing.alternate(ops, rounds, duration, progress=log)
    return {"samples": samples, "verdicts": verdicts,
            "summary": {name: timing.summarize(s) for name, s in samples.items()}}
