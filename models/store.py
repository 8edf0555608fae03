"""The identity store: put, read, list and delete an address's current identity, and load it unsealed for a call.

A call reads Datastore once (load_identity: one entity, so never a mix of two slots) before it
connects; its result is written once after, to LastCall (models.lastcall).
"""

from dataclasses import dataclass

from google.cloud import ndb

import kmskeys
import sealing
from dyncert import targets
from dyncert.errors import InputError, SignerError
from dyncert.identity import ClientIdentity
from dyncert.signers import SignerIdentity
from models.binding import check_kms_payload, new_slot, reseal_legacy, unseal_slot
from models.body import Upload, parse_upload
from models.entities import (
    Address, Conflict, NotFound, address_key, copy_slot, ensure_employee, has_current, new_event, owned_kms_names,
    save_with_event)
from models.kmsrefs import release
from models.views import public_view


@dataclass(frozen=True)
class StoredIdentity:
    """What a call needs: the unsealed identity, where to connect and what to trust."""

    employee: str
    address: int
    identity: object  # ClientIdentity, or SignerIdentity for a key held in Cloud KMS
    target: targets.Target
    ca_certs: object  # PEM bytes, or None for the app's default trust
    tls_version: str


def put_identity(employee, address, upload, settings, now=None, actor="app"):
    """Seal a validated Upload's key and store it as current; returns (public view, created?).

    A body (dict) is validated first (models.body.parse_upload); an Upload is not validated again.
    Everything is checked before the transaction, so a bad body changes nothing. next, previous
    and pending stay as they were.
    """
    if not isinstance(upload, Upload):
        upload = parse_upload(employee, address, upload, settings, now)
    key = upload.key
    if key != address_key(employee, address):
        raise ValueError("The upload was validated for another address.")
    kek = sealing.kek_from_settings(settings)
    slot = new_slot(upload.identity, upload.ca_pem, upload.target, upload.tls_version, kek, key)

    @ndb.transactional()
    def write():
        existing = key.get()
        if existing is None:
            ensure_employee(key)
        entity = existing or Address(key=key)
        created = not has_current(existing)
        before = None if created else existing.fingerprint_sha256
        owned = owned_kms_names(existing)
        copy_slot(slot, entity)
        reseal_legacy(entity, kek)
        action = "created" if created else "replaced"
        save_with_event(entity, new_event(key, action, actor, slot.fingerprint_sha256, before))
        return entity, created, owned

    entity, created, owned = write()
    release(owned, settings)  # the replaced identity's KMS key, if the app made it and nothing else uses it
    return public_view(entity), created


def get_record(employee, address):
    """The Address entity whatever it holds (maybe only a pending key or a next identity), or NotFound."""
    entity = address_key(employee, address).get()
    if entity is None:
        raise NotFound(f"Nothing is stored for {employee}/{address}.")
    return entity


def get_entity(employee, address):
    """The Address entity with a current identity, or NotFound."""
    entity = address_key(employee, address).get()
    if not has_current(entity):
        raise NotFound(f"No identity is stored for {employee}/{address}.")
    return entity


def stored_identity(entity, slot, settings):
    """A slot's identity with its key unsealed, ready for a dyncert call."""
    payload = unseal_slot(sealing.kek_from_settings(settings), entity, slot)
    if slot.kms_key:
        check_kms_payload(payload, slot.kms_key)
        identity = kms_identity(slot, settings)
    else:
        identity = ClientIdentity.from_trusted_pem(slot.chain_pem.encode(), payload)
    target = targets.Target(slot.host, slot.port, slot.server_hostname)
    ca = slot.ca_certs.encode() if slot.ca_certs else settings.ca_file  # None: dyncert's default trust
    return StoredIdentity(entity.key.parent().id(), entity.key.id(), identity, target, ca,
                          slot.tls_version or "TLS")


def kms_identity(slot, settings):
    """A stored KMS slot as a SignerIdentity (its signer warm in kmskeys); KMS refusing it now is signer_failed."""
    try:
        return SignerIdentity(slot.chain_pem.encode(), kmskeys.signer(slot.kms_key, settings),
                              check_validity=False, check_purpose=False)  # validated when stored, as from_trusted_pem
    except InputError as e:
        if e.code != "invalid_kms_key":
            raise
        raise SignerError(f"Cloud KMS refused the stored key version: {e.message}") from e


def load_identity(employee, address, settings):
    """The current identity with its key unsealed (one entity read: never a mix of two slots)."""
    entity = get_entity(employee, address)
    return stored_identity(entity, entity, settings)


def load_next(employee, address, settings):
    """The staged next identity with its key unsealed, or NotFound."""
    entity = get_record(employee, address)
    if entity.next is None:
        raise NotFound(f"No next identity is staged for {employee}/{address}.")
    return stored_identity(entity, entity.next, settings)


def load_staged(employee, address, settings):
    """The next identity for a call with it (next/request, next/echo): Conflict no_next without one."""
    entity = get_record(employee, address)
    if entity.next is None:
        raise Conflict("no_next", f"No next identity is staged for {employee}/{address}: PUT .../next first.")
    return stored_identity(entity, entity.next, settings)


def list_identities():
    """Public views of every stored identity, ordered by employee then address."""
    return [public_view(e) for e in list_entities()]


def list_entities():
    """Every Address entity with a current identity (for pages that show more than the public view)."""
    return [e for e in Address.query().order(Address.key).fetch() if has_current(e)]


def list_records():
    """Every Address entity, also those with only a pending key or a staged next (the admin list shows all)."""
    return Address.query().order(Address.key).fetch()


def count_identities():
    """How many identities are stored."""
    return Address.query(Address.fingerprint_sha256 > "").count()  # skips pending-only addresses


def delete_identity(employee, address, actor="app", settings=None):
    """Delete one address with all its slots; NotFound if absent. The Employee and the history stay.

    With `settings`, the Cloud KMS keys the app created for it are destroyed once nothing refers to them.
    """
    key = address_key(employee, address)

    @ndb.transactional()
    def remove():
        entity = key.get()
        if entity is None:
            raise NotFound(f"No identity is stored for {employee}/{address}.")
        key.delete()
        new_event(key, "deleted", actor, None, entity.fingerprint_sha256).put()
        return owned_kms_names(entity)

    owned = remove()
    if settings is not None:
        release(owned, settings)
