"""Manage identities from scripts and CI pipelines through the JSON API.

The app's URL comes from DYNCERT_URL (default http://127.0.0.1:8080, or --url) and the admin
token from ADMIN_TOKEN (or the variable named by --token-env). Examples:

    export DYNCERT_URL=http://127.0.0.1:8080 ADMIN_TOKEN="$(cat local/admin-token)"
    python -m tools.identity list
    python -m tools.identity put asalieri 1 --cert chain.pem --key key.pem --ca ca.pem --host partner.example.com
    python -m tools.identity put asalieri 2 --pkcs12 client.p12 --password-env P12_PASSWORD --host h.example
    python -m tools.identity get asalieri 1
    python -m tools.identity handshake asalieri 1
    python -m tools.identity request asalieri 1 --path /status -H "Accept: application/json"
    python -m tools.identity echo asalieri 1 --send hello
    python -m tools.identity delete asalieri 1 --yes                      # asks first without --yes
    python -m tools.identity csr asalieri 1 --cn asalieri --dns client.example.com > asalieri.csr
    python -m tools.identity next asalieri 1 --cert signed-chain.pem     # completes the pending key
    python -m tools.identity next asalieri 1 --test                      # handshake with the next identity
    python -m tools.identity next asalieri 1 --request --path /status    # an HTTPS request with it (--echo too)
    python -m tools.identity promote asalieri 1
    python -m tools.identity rollback asalieri 1
    python -m tools.identity history asalieri 1

Passwords are read from an environment variable (never a command-line argument: those show in
`ps`). The token goes only to DYNCERT_URL itself: a redirect is refused (the API sends none), and
plain http:// is refused unless the host is loopback. A failed call prints its code, message, and
what to check (the admin page's words). Exit status: 0 success (a request the partner answered
with 4xx/5xx too: flagged on stderr), 1 the API refused, the call failed (its error code is
printed) or a redirect was refused, 2 usage or a local file or variable missing (or a plain
http:// URL to another host), 3 the app could not be reached.
"""

import argparse
import base64
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from explanations import explain

UNREACHABLE = 3  # exit status when the app does not answer


class CliError(Exception):
    """A one-line error for stderr, with the exit status to end with."""

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: the API sends none, and following one would carry the token elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx, unfollowed


OPENER = urllib.request.build_opener(NoRedirects)


def loopback(host):
    """True for localhost names and loopback addresses: the only hosts plain http:// may reach."""
    host = (host or "").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(base):
    """Refuse plain http:// to another host: the admin token would cross the network in clear."""
    try:
        parts = urllib.parse.urlsplit(base)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as e:
        raise CliError(f"invalid app URL {base!r}: {e} (set DYNCERT_URL or --url)") from None
    if parts.scheme == "http" and not loopback(parts.hostname):
        raise CliError(f"refusing to send the admin token over plain http:// to {parts.hostname!r}: use https:// "
                       f"(http:// is only for loopback hosts such as 127.0.0.1 or localhost)")


def api(base, token, method, path, body=None, timeout=60):
    """One API call; returns (status, parsed JSON or None)."""
    check_url(base)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base.rstrip("/") + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with OPENER.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        if 300 <= e.code < 400:
            return e.code, {"error": {"code": "redirect_refused", "message": (
                f"{base} redirected to {e.headers.get('Location', '(no Location)')!r}; this app's API never "
                f"redirects, so nothing was sent there (check DYNCERT_URL or --url)")}}
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CliError(f"cannot reach the app at {base}: {reason} (is `make run` running? set DYNCERT_URL "
                       f"or --url)", UNREACHABLE) from None
    except ValueError as e:  # a URL without a scheme or host
        raise CliError(f"invalid app URL {base!r}: {e} (set DYNCERT_URL or --url)") from None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:  # not this app: some other server answered
        first = raw[:120].decode("utf-8", "replace").splitlines()[0] if raw.strip() else ""
        return status, {"error": {"code": "not_json", "message": f"{base} answered with something that is "
                                                                 f"not this app's JSON: {first!r}"}}


def read_text(path, option):
    """The text of a file named on the command line, or a CliError naming the option."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"cannot read the {option} file {path!r}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise CliError(f"the {option} file {path!r} is not PEM text (for DER or PKCS#12 use --pkcs12)") from None


def password(name):
    """The password held in environment variable `name`; an unset variable is an error."""
    if name not in os.environ:
        raise CliError(f"put: --password-env names {name}, which is not set (export {name}=... first)")
    return os.environ[name]


def put_body(args):
    """The PUT body from the command-line options (files are read here, passwords from env)."""
    body = {"host": args.host, "port": args.port}
    if args.pkcs12:
        try:
            with open(args.pkcs12, "rb") as f:
                body["pkcs12"] = base64.b64encode(f.read()).decode()
        except OSError as e:
            raise CliError(f"cannot read the --pkcs12 file {args.pkcs12!r}: {e.strerror or e}") from None
        if args.password_env:
            body["pkcs12_password"] = password(args.password_env)
    else:
        if not args.cert:
            raise CliError("put: give --cert and --key, or --pkcs12")
        body["cert"] = read_text(args.cert, "--cert")
        body["key"] = read_text(args.key or args.cert, "--key" if args.key else "--cert")
        if args.password_env:
            body["key_password"] = password(args.password_env)
    if args.ca:
        body["ca_certs"] = read_text(args.ca, "--ca")
    if args.sni:
        body["server_hostname"] = args.sni
    if args.tls_version:
        body["tls_version"] = args.tls_version
    return body


LIFECYCLE = ("csr", "next", "promote", "rollback", "history")
CALLS = ("handshake", "request", "echo")


def request_body(args):
    """The POST .../request body from --method, --path, -H and --body."""
    headers = {}
    for line in args.header or []:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise CliError(f"{args.command}: -H takes 'Name: value', found {line!r}")
        headers[name.strip()] = value.strip()
    return {"method": args.method, "path": args.path, "headers": headers, "body": args.body or ""}


def echo_body(args):
    """The POST .../echo body: the --send text as one line."""
    send = args.send if args.send.endswith("\n") else args.send + "\n"
    return {"send": send}


def call(args, base, token, path):
    """Run a call (handshake, request or echo) with the current identity, or with next (`path` .../next)."""
    kind = args.command if args.command in CALLS else "request" if args.request else "echo"
    body = request_body(args) if kind == "request" else echo_body(args) if kind == "echo" else None
    return api(base, token, "POST", f"{path}/{kind}", body)


def csr_body(args):
    """The POST .../csr body from the command-line options."""
    subject = {name: value for name, value in (("CN", args.cn), ("O", args.o), ("OU", args.ou), ("C", args.c),
                                               ("ST", args.st), ("L", args.l)) if value}
    return {"key_type": args.key_type, "subject": subject,
            "san": {"dns": args.dns or [], "email": args.email or [], "uri": args.uri or []}}


def next_body(args):
    """The PUT .../next body: the certificate alone completes the pending key; --key or --pkcs12 uploads one."""
    if not args.cert and not args.pkcs12:
        raise CliError("next: give --cert (and --key, or nothing for the pending key), or --pkcs12")
    if args.pkcs12 or args.key:
        body = put_body(args)
        if not args.host:
            del body["host"]  # the target defaults to the current identity's
        if args.port is None:
            del body["port"]
        return body
    body = {"cert": read_text(args.cert, "--cert")}
    for name, value in (("host", args.host), ("port", args.port), ("server_hostname", args.sni),
                        ("tls_version", args.tls_version)):
        if value is not None:
            body[name] = value
    if args.ca:
        body["ca_certs"] = read_text(args.ca, "--ca")
    return body


def lifecycle(args, base, token, path):
    """Run a key lifecycle subcommand; returns (status, data)."""
    if args.command == "csr":
        return api(base, token, "POST", path + "/csr", csr_body(args))
    if args.command == "next":
        if args.show:
            return api(base, token, "GET", path + "/next")
        if args.delete:
            return api(base, token, "DELETE", path + "/next")
        if args.test:
            return api(base, token, "POST", path + "/next/handshake")
        if args.request or args.echo:
            return call(args, base, token, path + "/next")
        return api(base, token, "PUT", path + "/next", next_body(args))
    if args.command == "history":
        return api(base, token, "GET", path + "/history")
    return api(base, token, "POST", f"{path}/{args.command}")


def add_lifecycle_parsers(sub):
    """The csr, next, promote, rollback and history subcommands."""
    csr = sub.add_parser("csr", help="generate a key here (sealed at once) and print its CSR")
    csr.add_argument("employee")
    csr.add_argument("address")
    csr.add_argument("--key-type", default="EC-P256",
                     choices=("EC-P256", "EC-P384", "RSA-2048", "RSA-3072", "RSA-4096", "Ed25519"))
    csr.add_argument("--cn", required=True, help="subject common name")
    for name in ("o", "ou", "c", "st", "l"):
        csr.add_argument(f"--{name}", help=f"subject {name.upper()}")
    csr.add_argument("--dns", action="append", help="a DNS subjectAltName (repeatable)")
    csr.add_argument("--email", action="append", help="an e-mail subjectAltName (repeatable)")
    csr.add_argument("--uri", action="append", help="a URI subjectAltName (repeatable)")
    csr.add_argument("--out", help="write the CSR to this file instead of printing it")
    nxt = sub.add_parser("next", help="stage (default), --show, --test, --request, --echo or --delete the next "
                                      "identity")
    nxt.add_argument("employee")
    nxt.add_argument("address")
    action = nxt.add_mutually_exclusive_group()
    action.add_argument("--show", action="store_true")
    action.add_argument("--test", action="store_true", help="handshake with the next identity")
    action.add_argument("--delete", action="store_true")
    action.add_argument("--request", action="store_true", help="an HTTPS request with the next identity")
    action.add_argument("--echo", action="store_true", help="a line over raw TLS with the next identity")
    add_call_options(nxt)
    nxt.add_argument("--cert", help="PEM certificate chain file (alone: the certificate for the pending key)")
    nxt.add_argument("--key", help="PEM private key file, to stage an identity made elsewhere")
    nxt.add_argument("--pkcs12", help="PKCS#12 file instead of --cert/--key")
    nxt.add_argument("--password-env", help="environment variable holding the key or PKCS#12 password")
    nxt.add_argument("--ca", help="PEM CA bundle (default: the current identity's)")
    nxt.add_argument("--host", help="default: the current identity's")
    nxt.add_argument("--port", type=int)
    nxt.add_argument("--sni")
    nxt.add_argument("--tls-version", choices=("TLS", "TLSv1_2", "TLSv1_3"))
    for name, text in (("promote", "the next identity becomes current"),
                       ("rollback", "current and previous swap"), ("history", "every change, newest first")):
        s = sub.add_parser(name, help=text)
        s.add_argument("employee")
        s.add_argument("address")


def add_call_options(p):
    """The request and echo options (also on `next`, for --request and --echo)."""
    p.add_argument("--method", default="GET", choices=("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"))
    p.add_argument("--path", default="/", help="request path (default /)")
    p.add_argument("-H", "--header", action="append", help="a request header 'Name: value' (repeatable)")
    p.add_argument("--body", help="request body text")
    p.add_argument("--send", default="hello", help="the line echo sends (a newline is added; default hello)")


def parser():
    p = argparse.ArgumentParser(prog="python -m tools.identity", description=__doc__.split("\n\n", 1)[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("DYNCERT_URL", "http://127.0.0.1:8080"),
                   help="the app's base URL (default: $DYNCERT_URL, else http://127.0.0.1:8080)")
    p.add_argument("--token-env", default="ADMIN_TOKEN", help="environment variable holding the admin token")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every stored identity (public views)")
    for name, text in (("get", "one identity's public view"), ("delete", "delete an identity (asks first)"),
                       ("handshake", "a TLS handshake with the current identity"),
                       ("request", "an HTTPS request with the current identity"),
                       ("echo", "a line over raw TLS with the current identity")):
        s = sub.add_parser(name, help=text)
        s.add_argument("employee")
        s.add_argument("address")
        if name == "delete":
            s.add_argument("--yes", action="store_true", help="do not ask (for scripts)")
        if name in ("request", "echo"):
            add_call_options(s)
    put = sub.add_parser("put", help="store or replace the current identity (certificate and key, or PKCS#12)")
    put.add_argument("employee")
    put.add_argument("address")
    put.add_argument("--cert", help="PEM certificate chain file")
    put.add_argument("--key", help="PEM private key file (default: the --cert file)")
    put.add_argument("--pkcs12", help="PKCS#12 file instead of --cert/--key")
    put.add_argument("--password-env", help="environment variable holding the key or PKCS#12 password")
    put.add_argument("--ca", help="PEM CA bundle trusted for the server")
    put.add_argument("--host", required=True)
    put.add_argument("--port", type=int, default=443)
    put.add_argument("--sni", help="server name to send and verify (default: host)")
    put.add_argument("--tls-version", choices=("TLS", "TLSv1_2", "TLSv1_3"))
    add_lifecycle_parsers(sub)
    return p


def main(argv=None):
    try:
        try:
            return run(parser().parse_args(argv))
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at exit
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.status
    except BrokenPipeError:
        # `... | head` closed our stdout: stop quietly (Python's documented recipe, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def confirmed(args):
    """True when `delete` may go ahead: --yes, or 'y' typed at the question (stdin; EOF is no)."""
    if args.yes:
        return True
    print(f"Delete {args.employee}/{args.address}: its current, next and previous identities and any pending key? "
          f"[y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def report(args, status, data):
    """Print an API refusal: its code and message, then what it means and what to check (the page's words)."""
    error = (data or {}).get("error", {})
    code, message = error.get("code", "error"), error.get("message", "")
    if status == 401:
        message = (f"the admin token was not accepted (check {args.token_env}: it must hold the app's ADMIN_TOKEN, "
                   f"as in local/admin-token for `make run`)")
    elif code == "no_next":
        message = (f"nothing is staged as next for {args.employee}/{args.address}: stage one first with "
                   f"`python -m tools.identity next {args.employee} {args.address} --cert signed-chain.pem`")
    elif code == "wrong_password" and not getattr(args, "password_env", None):
        message += (" Give the password with --password-env NAME (an environment variable holding it; never on "
                    "the command line).")
    print(f"{status} {code}: {message}", file=sys.stderr)
    explained = explain(code, trusts="the CA certificates this identity trusts (its own CA bundle, else the app's "
                                     "CA_FILE or the system's trust store)")
    if explained and status in (502, 504):
        print(f"What happened: {explained[0]}", file=sys.stderr)
        print(f"What to check: {explained[1]}", file=sys.stderr)


def run(args):
    """Carry out one command; returns the exit status."""
    token = os.environ.get(args.token_env)
    if not token:
        print(f"Set {args.token_env} to the admin token.", file=sys.stderr)
        return 2
    if args.command == "list":
        status, data = api(args.url, token, "GET", "/api/v1/identities")
    else:
        path = f"/api/v1/employees/{args.employee}/addresses/{args.address}"
        if args.command == "get":
            status, data = api(args.url, token, "GET", path)
        elif args.command == "delete":
            if not confirmed(args):
                print("Not deleted (answer y, or pass --yes).", file=sys.stderr)
                return 1
            status, data = api(args.url, token, "DELETE", path)
        elif args.command in CALLS:
            status, data = call(args, args.url, token, path)
        elif args.command in LIFECYCLE:
            status, data = lifecycle(args, args.url, token, path)
        else:
            status, data = api(args.url, token, "PUT", path, put_body(args))
    if status >= 300:  # a 3xx too: api() never follows one
        report(args, status, data)
        return 1
    answered = (data or {}).get("status") if args.command == "request" or getattr(args, "request", False) else None
    if isinstance(answered, int) and not 200 <= answered < 400:  # the call worked; the partner said no (amber)
        print(f"note: the partner answered {answered}", file=sys.stderr)
    if args.command == "csr" and data:  # the CSR itself, ready for the partner's CA (the key stays sealed)
        if args.out:
            with open(args.out, "w", encoding="ascii") as f:
                f.write(data["csr"])
            print(json.dumps(data["pending"], indent=2, sort_keys=True))
        else:
            sys.stdout.write(data["csr"])
        return 0
    if data is not None:
        print(json.dumps(data, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
