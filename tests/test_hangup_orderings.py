"""Issue 23: a TLS 1.3 peer that hangs up after the handshake without a ticket or an alert gets one
verdict, whatever the order of its close or reset and our write or read (each ordering forced)."""

import pytest

from tests.harness import pki
from dyncert import calls, targets
from dyncert.context import client_context
from dyncert.errors import RemoteError
from dyncert.identity import ClientIdentity
from tests.harness.hangups import HANDSHAKE_ORDERINGS, ORDERINGS, ORDERINGS_ANSWERED, Choreography, HangingUpPeer

FAST = calls.Timeouts(connect=5, handshake=5, read=5)
KINDS = {"request": ORDERINGS, "echo": ORDERINGS, "handshake": HANDSHAKE_ORDERINGS}


@pytest.fixture(scope="module")
def world():
    ours, silent = pki.make_pki("ours"), pki.make_pki("silent")  # the peer trusts both: both finish the handshake
    good, bad = pki.client_cert(ours.clients_ca, "asalieri"), pki.client_cert(silent.clients_ca, "mallory")
    return dict(ours=ours, cas=[ours.ca_pem, silent.ca_pem], server=pki.server_cert(ours.root), good=good, bad=bad)


def call(world, kind, who, plan, tickets=0):
    """Run `kind` with `who`'s certificate against a peer following `plan`: the result, or the RemoteError."""
    creds = world[who]
    with HangingUpPeer(world["server"], world["cas"], world["good"].fingerprint_sha256, plan, tickets) as peer:
        ctx = client_context(ClientIdentity.from_pem(creds.cert_pem, creds.key_pem), world["ours"].ca_pem)
        ctx.sslsocket_class = plan.socket_class()  # holds our first write or read until the ordering is there
        target = targets.validate_target("127.0.0.1", peer.port, "localhost")
        try:
            if kind == "request":
                return calls.https_request(ctx, target, "fp", timeouts=FAST)
            if kind == "echo":
                return calls.echo(ctx, target, "fp", "hello\n", timeouts=FAST)
            return calls.handshake(ctx, target, "fp", timeouts=FAST)
        except RemoteError as e:
            e.message = e.message.replace(f":{peer.port}", ":PORT")  # each ordering gets its own peer and port
            return e


@pytest.mark.parametrize("kind", KINDS)
def test_a_silent_hang_up_gets_one_verdict_in_every_ordering(world, kind):
    verdicts = {}
    for name, ordering in KINDS[kind].items():
        plan = Choreography(ordering)
        outcome = call(world, kind, "bad", plan)
        assert plan.fired == set(ordering) - {"server"}, f"{name}: the ordering was not forced"
        assert isinstance(outcome, RemoteError), (name, outcome)
        verdicts[name] = (outcome.code, outcome.message)
    assert len(set(verdicts.values())) == 1, verdicts
    code, message = next(iter(verdicts.values()))
    assert code == "connection_reset" and "most likely refused the client certificate" in message


@pytest.mark.parametrize("answer", ["answer", "answer, close before our read"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_accepted_twin_is_answered(world, kind, answer):
    # The peer answers and closes without close_notify; our first read may come after its FIN (a busy
    # machine): the TLS facts must not be read from a socket that saw that EOF ("handshake not done yet").
    plan = Choreography(ORDERINGS_ANSWERED[answer] if kind != "handshake" else {"server": "answer"})
    result = call(world, kind, "good", plan)
    assert plan.fired == set(plan.steps) - {"server"}
    assert not isinstance(result, RemoteError), result
    if kind == "request":
        assert result["status"] == 200 and result["body"] == "hi"
    elif kind == "echo":
        assert result["received"] == "hello\n"
    else:
        assert result["ok"] and result["tls_version"] == "TLSv1.3"


@pytest.mark.parametrize("name", HANDSHAKE_ORDERINGS)
def test_a_ticket_before_the_hang_up_is_no_refusal(world, name):
    # The twin of the silent close: a server that issued a ticket took our certificate, even when its
    # close arrives in the same read as the ticket (before, the close alone decided: "refused").
    plan = Choreography(HANDSHAKE_ORDERINGS[name])
    result = call(world, "handshake", "bad", plan, tickets=2)
    assert isinstance(result, RemoteError) and result.code == "connection_reset", result
    assert "accepted the client certificate" in result.message and "refused" not in result.message
