"""The sealing associated data: a sealed key opens only in its entity, in its slot's role, at the record's
version, for its target, trust and chain.

v3 (this version): entity path, role (current, next, previous; pending), the Address's record_version,
and the digest of target, trust and chain. Every write that changes an Address seals each of its keys
again under its (new) role and the next version, in the write's own transaction: a slot copied into
another role, or an older slot or pending key put back after a change, does not open (record_tampered).
v1 (entity path only) and v2 (also target and trust) records still open until their next write seals
them as v3; once a record has a version, the older forms are refused (no downgrade).
"""

import datetime
import hashlib

import kmskeys
import sealing
from models.entities import UTC, Slot, copy_slot

SEAL_VERSION = 3  # associated data: entity path + role + record version + digest of target, trust and chain
ROLES = ("current", "next", "previous")
MOVED = ("The stored record does not match its sealed key: a key was moved to another slot, or an older "
         "one put back, outside this app. It is not used; replace it.")


def _path(key):
    return ("/".join(str(part) for part in key.flat())).encode()


def _digest(slot):
    digest = hashlib.sha256()
    for value in (slot.host, slot.port, slot.server_hostname, slot.tls_version, slot.ca_certs or None,
                  slot.chain_pem):
        data = b"\xff" if value is None else str(value).encode()  # length-prefixed: no two records collide
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest().encode()


def seal_context(key, slot=None):
    """The v1 (entity path) or, with `slot`, v2 (also target and trust) associated data of older records.

    A copy of the key in another entity, or a record pointed at another host, port, SNI name,
    TLS version, CA bundle or chain outside this app, will not open.
    """
    if slot is None:
        return _path(key)
    return b"v2|" + _path(key) + b"|" + _digest(slot)


def slot_context(key, slot, role, version):
    """v3: the entity, the slot's role and the record's version, its target, trust and chain."""
    return b"v3|" + _path(key) + b"|" + role.encode() + b"|" + str(version).encode() + b"|" + _digest(slot)


def fresh_context(key, slot):
    """A slot made for a write, before the write's transaction seals it in its place (never stored so)."""
    return b"fresh|" + seal_context(key, slot)


def pending_context(key, public_key_sha256):
    """A pending key made for a write (create_csr), before the transaction seals it in place (never stored so)."""
    return b"fresh|" + _legacy_pending_context(key, public_key_sha256)


def _legacy_pending_context(key, public_key_sha256):
    return b"pending|" + _path(key) + b"|" + public_key_sha256.encode()


def _pending_v3_context(key, public_key_sha256, version):
    return b"pending|v3|" + _path(key) + b"|" + str(version).encode() + b"|" + public_key_sha256.encode()


def role_of(entity, slot):
    """The role `slot` has in `entity` (it must be one of its slots)."""
    for role, held in slots_of(entity):
        if held is slot:
            return role
    raise ValueError("The slot is not one of the entity's slots.")


def slots_of(entity):
    """(role, Slot) of each identity the Address holds (its own fields are `current`)."""
    held = [("current", entity), ("next", entity.next), ("previous", entity.previous)]
    return [(role, slot) for role, slot in held if slot is not None and slot.chain_pem]


def _stored_context(entity, slot, role):
    """The associated data a stored slot opens under where it is, or None (an older form in a v3 record)."""
    if slot.seal_version == SEAL_VERSION:
        version = entity.record_version
        return None if version is None else slot_context(entity.key, slot, role, version)
    if entity.record_version is not None:
        return None
    return seal_context(entity.key, slot if slot.seal_version == 2 else None)


def unseal_slot(kek, entity, slot):
    """The PKCS#8 key of one of `entity`'s slots, checked against its entity, role, version, target and trust."""
    context = _stored_context(entity, slot, role_of(entity, slot))
    if context is None:
        raise sealing.RecordTampered(MOVED)
    return sealing.unseal(kek, slot.wrapped_dek, slot.sealed_key, context)


def unseal_pending(kek, entity):
    """The PKCS#8 key pending in `entity`, checked against its entity, the record's version and its public key."""
    pending = entity.pending
    if pending.seal_version == SEAL_VERSION and entity.record_version is not None:
        context = _pending_v3_context(entity.key, pending.public_key_sha256, entity.record_version)
    elif pending.seal_version is None and entity.record_version is None:
        context = _legacy_pending_context(entity.key, pending.public_key_sha256)
    else:
        raise sealing.RecordTampered(MOVED)
    return sealing.unseal(kek, pending.wrapped_dek, pending.sealed_key, context)


def opened_keys(entity, kek):
    """{sealed blob: PKCS#8 key, or None} of every key of `entity` where it is now (before a change moves them).

    None for a tampered one (it stays refused wherever it goes) and for a blob held twice: only a
    writer copies a sealed key into a second slot, so neither copy is sealed again. A KEK that cannot
    be reached raises (the write is refused, nothing changes) rather than leave a good key behind.
    """
    keys = {}
    if entity is None:
        return keys
    held = [(slot.sealed_key, lambda slot=slot: unseal_slot(kek, entity, slot)) for _, slot in slots_of(entity)]
    if entity.pending is not None and entity.pending.sealed_key:
        held.append((entity.pending.sealed_key, lambda: unseal_pending(kek, entity)))
    for blob, unseal in held:
        if blob in keys:
            keys[blob] = None
            continue
        try:
            keys[blob] = unseal()
        except sealing.RecordTampered:
            keys[blob] = None
    return keys


def _fresh(kek, wrapped_dek, blob, context):
    """The key of a slot or pending key made for this write, or None."""
    try:
        return sealing.unseal(kek, wrapped_dek, blob, context)
    except sealing.RecordTampered:
        return None


def reseal(entity, kek, opened=None):
    """Seal every key of `entity` again under its role and the record's next version (in the write's transaction).

    `opened`: opened_keys of the entity as read, before the change moved slots (promote, rollback);
    keys that did not move, and new ones (fresh), are opened here. A key that opens nowhere stays
    as it is: refused when used, never blessed by a write.
    """
    known = opened if opened is not None else opened_keys(entity, kek)  # no move: each key is where it was
    version = (entity.record_version or 0) + 1
    for role, slot in slots_of(entity):
        key_pem = known.get(slot.sealed_key) or _fresh(kek, slot.wrapped_dek, slot.sealed_key,
                                                       fresh_context(entity.key, slot))
        if key_pem is None:
            continue
        if role != "current":  # a copy: the caller's Slot stays as it was if the transaction is retried
            slot = copy_slot(slot)
            setattr(entity, role, slot)
        slot.sealed_key = sealing.reseal(kek, slot.wrapped_dek, key_pem, slot_context(entity.key, slot, role, version))
        slot.seal_version = SEAL_VERSION
    pending = entity.pending
    if pending is not None and pending.sealed_key:
        key_pem = known.get(pending.sealed_key) or _fresh(
            kek, pending.wrapped_dek, pending.sealed_key, pending_context(entity.key, pending.public_key_sha256))
        if key_pem is not None:
            pending = entity.pending = type(pending)(**pending.to_dict())
            pending.sealed_key = sealing.reseal(kek, pending.wrapped_dek, key_pem, _pending_v3_context(
                entity.key, pending.public_key_sha256, version))
            pending.seal_version = SEAL_VERSION
    entity.record_version = version


reseal_legacy = reseal  # the name the store's writes call it by (it re-seals v1/v2 records too)


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
    """A Slot for a validated identity and target, its key (or KMS key name) sealed for the write that places it
    (see reseal)."""
    slot = Slot(chain_pem=identity.chain_pem.decode(), ca_certs=ca_pem,
                host=target.host, port=target.port, server_hostname=target.sni, tls_version=tls_version,
                subject=identity.subject, issuer=identity.issuer, serial=identity.serial,
                not_before=identity.not_before, not_after=identity.not_after,
                fingerprint_sha256=identity.fingerprint_sha256, san=list(identity.san),
                key_type=kms_key_type(identity) or identity.key_type, chain_length=identity.chain_length,
                staged=now or datetime.datetime.now(UTC), kms_key=kms_name(identity),
                kms_owned=bool(kms_owned and kms_name(identity)), kms_protection=kms_protection(identity))
    slot.kek_id = kek.kek_id
    slot.wrapped_dek, slot.sealed_key = sealing.seal(kek, sealed_payload(identity), fresh_context(key, slot))
    return slot
