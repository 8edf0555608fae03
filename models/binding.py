"""The sealing associated data: a sealed key opens only in its entity, for its target, trust and chain."""

import datetime
import hashlib

import kmskeys
import sealing
from models.entities import UTC, Slot

SEAL_VERSION = 2  # associated data: entity path + digest of target, trust and chain


def seal_context(key, slot=None):
    """Associated data binding a sealed key to its entity (v1) and, with `slot`, to its target and trust (v2).

    A copy of the key in another entity, or a record pointed at another host, port, SNI name,
    TLS version, CA bundle or chain outside this app, will not open.
    """
    path = ("/".join(str(part) for part in key.flat())).encode()
    if slot is None:
        return path
    digest = hashlib.sha256()
    for value in (slot.host, slot.port, slot.server_hostname, slot.tls_version, slot.ca_certs or None,
                  slot.chain_pem):
        data = b"\xff" if value is None else str(value).encode()  # length-prefixed: no two records collide
        digest.update(len(data).to_bytes(8, "big") + data)
    return b"v2|" + path + b"|" + digest.hexdigest().encode()


def pending_context(key, public_key_sha256):
    """Associated data of a pending key: its entity and its public key."""
    return b"pending|" + seal_context(key) + b"|" + public_key_sha256.encode()


def unseal_slot(kek, key, slot):
    """The PKCS#8 key of a slot, checked against its entity (and, for v2, its target and trust)."""
    context = seal_context(key, slot if slot.seal_version == SEAL_VERSION else None)
    return sealing.unseal(kek, slot.wrapped_dek, slot.sealed_key, context)


def seal_into(slot, kek, key, key_pem):
    """Seal `key_pem` into `slot` bound to its target and trust (the slot's other fields are set)."""
    slot.seal_version = SEAL_VERSION
    slot.kek_id = kek.kek_id
    slot.wrapped_dek, slot.sealed_key = sealing.seal(kek, key_pem, seal_context(key, slot))


def reseal_legacy(entity, kek):
    """Re-seal v1 slots with the v2 associated data (on the entity's next write; a tampered one is left)."""
    for slot in (entity, entity.next, entity.previous):
        if slot is not None and slot.chain_pem and slot.seal_version != SEAL_VERSION:
            try:
                key_pem = unseal_slot(kek, entity.key, slot)
            except sealing.UnsealError:
                continue  # stays refused when used, never silently blessed
            seal_into(slot, kek, entity.key, key_pem)


KMS_PREFIX = b"cloudkms:"  # what a KMS slot seals in place of a key: its key version name


def sealed_payload(identity):
    """What a slot seals: the PKCS#8 key, or for a key held in Cloud KMS its key version name."""
    name = kms_name(identity)
    return identity.key_pem if name is None else KMS_PREFIX + name.encode()


def kms_name(identity):
    """The Cloud KMS key version of a SignerIdentity whose signer is KMS, else None."""
    return getattr(getattr(identity, "signer", None), "key_version_name", None)


def check_kms_payload(payload, name):
    """The unsealed payload of a KMS slot must name its stored key version (else the record was edited)."""
    if payload != KMS_PREFIX + name.encode():
        raise sealing.RecordTampered("The stored Cloud KMS key name does not match what was sealed with it: "
                                     "the record was changed outside the app.")


def kms_key_type(identity):
    """'EC P-256 (Cloud KMS, HSM)' for a KMS-held identity, else None."""
    if kms_name(identity) is None:
        return None
    return kmskeys.label(identity.public_key, kmskeys.protection_of(identity.signer))


def kms_protection(identity):
    """HSM or SOFTWARE for a KMS-held identity, else None."""
    return kmskeys.protection_of(identity.signer) if kms_name(identity) else None


def new_slot(identity, ca_pem, target, tls_version, kek, key, now=None, kms_owned=False):
    """A Slot for a validated identity and target, its key (or KMS key name) sealed and bound to both."""
    slot = Slot(chain_pem=identity.chain_pem.decode(), ca_certs=ca_pem,
                host=target.host, port=target.port, server_hostname=target.sni, tls_version=tls_version,
                subject=identity.subject, issuer=identity.issuer, serial=identity.serial,
                not_before=identity.not_before, not_after=identity.not_after,
                fingerprint_sha256=identity.fingerprint_sha256, san=list(identity.san),
                key_type=kms_key_type(identity) or identity.key_type, chain_length=identity.chain_length,
                staged=now or datetime.datetime.now(UTC), kms_key=kms_name(identity),
                kms_owned=bool(kms_owned and kms_name(identity)), kms_protection=kms_protection(identity))
    seal_into(slot, kek, key, sealed_payload(identity))
    return slot
