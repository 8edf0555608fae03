"""What a failed test call means and what to check, per error code: the admin page's copy, and the CLI's.

A plain module (no webapp2, no Jinja2) so tools/identity.py prints the same words the page shows.
"""

# Plain-language explanation and what to check, per failure code of a test call.
EXPLANATIONS = {
    "unknown_ca": (
        "The server's certificate does not chain to a CA this identity trusts.",
        "The server's certificate does not chain to {trusts} — check ca_certs (upload the CA that "
        "issued the server's certificate, with any intermediates the server does not send){or_ca_file}."),
    "hostname_mismatch": (
        "The server's certificate is valid but not issued for the name we asked for.",
        "Check the SNI name (server_hostname): it must match a DNS or IP entry in the server "
        "certificate's subjectAltName. Connecting by IP address usually needs the DNS name here."),
    "peer_rejected_certificate": (
        "The server refused the client certificate this identity presented.",
        "Check that the server trusts the CA that issued this client certificate, that the full "
        "chain (leaf + intermediates) was uploaded, and that the certificate is not revoked or "
        "expired in the server's view."),
    "protocol_version": (
        "The server and this app share no TLS version.",
        "Check the TLS version setting of this identity (TLS, TLSv1_2, TLSv1_3) against what the "
        "server supports; TLS 1.0 and 1.1 are never offered."),
    "signer_failed": (
        "The signer holding this identity's private key (Cloud KMS, an HSM) did not sign.",
        "Check that the signer is reachable and allowed to sign with this key (IAM, token login), "
        "and read the message above for its own error."),
    "handshake_failed": (
        "The TLS handshake failed for a reason other than the usual ones.",
        "Check that the port speaks TLS (not plain HTTP), that a cipher suite is shared, and read "
        "the message above for OpenSSL's reason."),
    "invalid_response": (
        "The TLS handshake succeeded, but the reply was not HTTP/1.1: the port speaks TLS but not HTTP.",
        "Check the port: it may be a raw TLS service (use Echo for it) rather than the HTTPS endpoint, "
        "or an HTTP/2-only server. The handshake itself is fine."),
    "peer_certificate_expired": (
        "The server presented a certificate (or chain) that has expired.",
        "The server's operator must renew its certificate; check also that this app's clock is right. "
        "Trusting another CA does not help."),
    "peer_certificate_not_yet_valid": (
        "The server presented a certificate that is not valid yet.",
        "Check the clocks: the server's certificate starts in the future as this app sees it (a new "
        "certificate installed early, or a clock off on either side)."),
    "connection_refused": (
        "Nothing accepted the TCP connection at the stored host and port.",
        "Check the host and port of this identity and that the server is running and reachable "
        "from App Engine (firewall, Serverless VPC Access for private addresses)."),
    "dns_failure": (
        "The host name could not be resolved.",
        "Check the spelling of the host; private names need Serverless VPC Access or a public "
        "DNS record."),
    "connection_reset": (
        "The server closed the connection abruptly.",
        "Servers often reset instead of sending an alert when they reject a client certificate "
        "or a TLS version: check both, then the server's own log."),
    "timeout": (
        "The server did not answer in time.",
        "Check that the host and port are right and reachable (a firewall that drops packets "
        "shows up as a timeout), and that the server answers the request or echo line. A server "
        "that sends slowly is cut off at CALL_DEADLINE (30 s unless set) for the whole call."),
    "target_not_allowed": (
        "This app refuses to connect to the stored target.",
        "Link-local and metadata-server addresses are always refused; when ALLOWED_TARGETS is "
        "set, the host:port must match one of its patterns."),
    "invalid_target": (
        "The stored target is not a valid host and port.",
        "Replace the identity with a corrected host, port and SNI name."),
    "invalid_request": (
        "The test request was not valid.",
        "Check the method, that the path starts with '/', and that each header line is "
        "'Name: value'."),
}


def explain(code, trusts="the CA certificates this identity trusts", own_bundle=True):
    """(what happened, what to check) for an error code, or None; `trusts` names what unknown_ca verifies against."""
    if code not in EXPLANATIONS:
        return None
    what, check = EXPLANATIONS[code]
    if code == "unknown_ca":
        check = check.format(trusts=trusts, or_ca_file="" if own_bundle else ", or add that CA to CA_FILE for "
                                                                             "every identity")
    return what, check
