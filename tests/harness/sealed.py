"""Sealed records as a Datastore writer sees them: raw keys, legacy (pre-v1.1) records, store and call helpers."""

import datetime
import json
import os

from google.cloud import datastore as raw_datastore

import sealing

URL = "/api/v1/employees/asalieri/addresses/1"


def db():
    return raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])


def raw_key(client, address=1):
    return client.key("Employee", "asalieri", "Address", address)


def store(admin, creds, port, ca_pem, status=201):
    body = dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode(), ca_certs=ca_pem.decode(),
                host="127.0.0.1", port=port, server_hostname="localhost")
    return admin.put(URL, json.dumps(body), content_type="application/json", status=status).json


def call(admin, path="/request", status=200):
    return admin.post(URL + path, json.dumps({}), content_type="application/json", status=status)


def who(response):
    return json.loads(response.json["body"])["fingerprint_sha256"]


def write_legacy(settings, creds, port, ca_pem):
    """An Address exactly as stored before v1.1: the old property set, the key sealed to the entity path only."""
    client = db()
    key = raw_key(client)
    chain = creds.cert_pem.decode()
    from dyncert.identity import ClientIdentity
    identity = ClientIdentity.from_pem(creds.cert_pem, creds.key_pem)
    kek = sealing.kek_from_settings(settings)
    wrapped_dek, sealed_key = sealing.seal(kek, identity.key_pem, b"Employee/asalieri/Address/1")
    now = datetime.datetime.now(datetime.timezone.utc)
    client.put(raw_datastore.Entity(client.key("Employee", "asalieri")))
    entity = raw_datastore.Entity(key, exclude_from_indexes=(
        "chain_pem", "sealed_key", "wrapped_dek", "kek_id", "ca_certs", "host", "port", "server_hostname",
        "tls_version", "subject", "issuer", "serial", "not_before", "san", "key_type", "chain_length"))
    entity.update(dict(
        chain_pem=identity.chain_pem.decode(), sealed_key=sealed_key, wrapped_dek=wrapped_dek, kek_id=kek.kek_id,
        ca_certs=ca_pem.decode(), host="127.0.0.1", port=port, server_hostname="localhost", tls_version="TLS",
        subject=identity.subject, issuer=identity.issuer, serial=identity.serial, not_before=identity.not_before,
        not_after=identity.not_after, fingerprint_sha256=identity.fingerprint_sha256, san=list(identity.san),
        key_type=identity.key_type, chain_length=identity.chain_length, created=now, updated=now))
    assert chain.startswith("-----BEGIN CERTIFICATE-----")
    client.put(entity)
    return identity.fingerprint_sha256
