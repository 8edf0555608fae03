"""The identity store: put, read, list and delete an address's current identity, and load it unsealed for a call.

A call reads Datastore once (load_identity: one entity, so never a mix of two slots) before it
connects; its result is written once after, to LastCall (models.lastcall).
"""

from dataclasses import dataclass

from google.cloud import ndb

import sealing
from dyncert import targets
from dyncert.identity import ClientIdentity
from models.binding import new_slot, reseal_legacy, unseal_slot
from models.body import Upload, parse_upload
from models.entities import (
    Address, Conflict, NotFound, address_key, copy_slot, ensure_employee, has_current, new_event, save_with_event)
from models.views import public_view


@dataclass(frozen=True)
class StoredIdentity:
    """What a call needs: the unsealed identity, where to connect and what to trust."""

    employee: str
    address: int
    identity: ClientIdentity
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
        copy_slot(slot, entity)
        reseal_legacy(entity, kek)
        action = "created" if created else "replaced"
        save_with_event(entity, new_event(key, action, actor, slot.fingerprint_sha256, before))
        return entity, created

    entity, created = write()
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
    key_pem = unseal_slot(sealing.kek_from_settings(settings), entity, slot)
    identity = ClientIdentity.from_trusted_pem(slot.chain_pem.encode(), key_pem)
    target = targets.Target(slot.host, slot.port, slot.server_hostname)
    ca = slot.ca_certs.encode() if slot.ca_certs else settings.ca_file  # None: dyncert's default trust
    return StoredIdentity(entity.key.parent().id(), entity.key.id(), identity, target, ca,
                          slot.tls_version or "TLS")


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


def delete_identity(employee, address, actor="app"):
    """Delete one address with all its slots; NotFound if absent. The Employee and the history stay."""
    key = address_key(employee, address)

    @ndb.transactional()
    def remove():
        entity = key.get()
        if entity is None:
            raise NotFound(f"No identity is stored for {employee}/{address}.")
        key.delete()
        new_event(key, "deleted", actor, None, entity.fingerprint_sha256).put()

    remove()
