"""The Datastore entities (Employee, Address with its slots, Event), their keys and the store's errors."""

import datetime
import re

from google.cloud import ndb
from google.cloud.datastore import helpers as datastore_helpers
from google.cloud.ndb import model as ndb_model

from dyncert.errors import InputError

# Datastore refuses an entity over 1 MiB - 4 bytes. One Address holds current, next, previous and the pending
# key, each of which may be a 256 KiB body: a write is measured before it is attempted (never a 500).
MAX_ENTITY_BYTES = 1_048_572
# The serialized protobuf measured here differs from Datastore's own accounting (key with the project id,
# per-property overhead) by far less than this; an entity's auto_now dates are set after the measure.
ENTITY_BUDGET = MAX_ENTITY_BYTES - 4096

EMPLOYEE_ID = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MAX_ADDRESS_ID = 2 ** 53
UTC = datetime.timezone.utc


class NotFound(Exception):
    """No identity is stored under that key."""


class Conflict(Exception):
    """The address is not in a state that allows this change (409 with a stable code)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class TooLarge(Exception):
    """The change would make the record larger than Datastore stores (413 too_large); nothing was written."""

    code = "too_large"

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class Employee(ndb.Model):
    """The parent of an employee's Addresses (its id is the employee name)."""

    created = ndb.DateTimeProperty(auto_now_add=True, tzinfo=UTC)


class Slot(ndb.Model):
    """One identity: certificate chain, sealed key and the peer it talks to (current, next or previous)."""

    chain_pem = ndb.TextProperty()
    sealed_key = ndb.BlobProperty()                # AES-256-GCM ciphertext of the PKCS#8 key
    wrapped_dek = ndb.BlobProperty()               # its data key, wrapped by the KEK
    kek_id = ndb.TextProperty()
    seal_version = ndb.IntegerProperty(indexed=False)  # None: v1 (entity); 2: + target, trust; 3: + role, version
    ca_certs = ndb.TextProperty()                  # PEM bundle trusted for the peer, or None
    host = ndb.TextProperty()
    port = ndb.IntegerProperty(indexed=False)
    server_hostname = ndb.TextProperty()
    tls_version = ndb.TextProperty()
    subject = ndb.TextProperty()
    issuer = ndb.TextProperty()
    serial = ndb.TextProperty()
    not_before = ndb.DateTimeProperty(tzinfo=UTC, indexed=False)
    not_after = ndb.DateTimeProperty(tzinfo=UTC)   # indexed: the expiry check queries it
    fingerprint_sha256 = ndb.StringProperty()
    san = ndb.TextProperty(repeated=True)
    key_type = ndb.TextProperty()
    chain_length = ndb.IntegerProperty(indexed=False)
    staged = ndb.DateTimeProperty(tzinfo=UTC, indexed=False)
    kms_key = ndb.TextProperty()                   # a Cloud KMS key version holds the key (sealed_key: its name)
    kms_owned = ndb.BooleanProperty(indexed=False)  # the app created it: destroyed once no slot refers to it
    kms_protection = ndb.TextProperty()            # HSM or SOFTWARE, as KMS reported it


SLOT_FIELDS = tuple(Slot._properties)


class Pending(ndb.Model):
    """A key generated here, sealed, waiting for the certificate its CSR asks for."""

    sealed_key = ndb.BlobProperty()
    wrapped_dek = ndb.BlobProperty()
    kek_id = ndb.TextProperty()
    key_type = ndb.TextProperty()
    public_key_sha256 = ndb.TextProperty()
    subject = ndb.TextProperty()
    san = ndb.TextProperty(repeated=True)
    csr_pem = ndb.TextProperty()
    created = ndb.DateTimeProperty(tzinfo=UTC)
    seal_version = ndb.IntegerProperty(indexed=False)  # None: entity and public key; 3: + the record's version
    kms_key = ndb.TextProperty()                   # created in Cloud KMS: its key version (sealed_key: its name)
    kms_owned = ndb.BooleanProperty(indexed=False)
    kms_protection = ndb.TextProperty()


class Address(Slot):
    """An address: its `current` identity (the entity's own Slot fields), `next`, `previous`, `pending`.

    Entities stored before v1.1 hold only the Slot fields: they read as `current` unchanged.
    One entity holds every slot, so promote and rollback are single-entity transactions.
    """

    next = ndb.LocalStructuredProperty(Slot)
    previous = ndb.LocalStructuredProperty(Slot)
    pending = ndb.LocalStructuredProperty(Pending)
    pending_created = ndb.DateTimeProperty(tzinfo=UTC)  # indexed: the cron finds stale pending keys
    # Moved on by every write, which seals each key again under it (models.binding): an older slot put back
    # by a Datastore writer does not open. None: a record not written since v1/v2 associated data.
    record_version = ndb.IntegerProperty(indexed=False)
    created = ndb.DateTimeProperty(auto_now_add=True, tzinfo=UTC)
    updated = ndb.DateTimeProperty(auto_now=True, tzinfo=UTC)
    kms_keys = ndb.StringProperty(repeated=True)  # indexed: is a KMS key version still used by any address?

    def _pre_put_hook(self):
        self.kms_keys = sorted(kms_names(self))


def kms_names(entity):
    """The Cloud KMS key versions the slots of an Address refer to (current, next, previous, pending)."""
    if entity is None:
        return set()
    return {slot.kms_key for slot in (entity, entity.next, entity.previous, entity.pending)
            if slot is not None and slot.kms_key}


def owned_kms_names(entity):
    """The key versions among kms_names(entity) that the app created (the ones it may destroy)."""
    if entity is None:
        return set()
    return {slot.kms_key for slot in (entity, entity.next, entity.previous, entity.pending)
            if slot is not None and slot.kms_key and slot.kms_owned}


class Event(ndb.Model):
    """One change of an address, a child of its key (kept after the address is deleted)."""

    at = ndb.DateTimeProperty(tzinfo=UTC, indexed=False)
    actor = ndb.TextProperty()
    action = ndb.TextProperty()
    fingerprint_sha256 = ndb.TextProperty()
    previous_fingerprint_sha256 = ndb.TextProperty()
    public_key_sha256 = ndb.TextProperty()


def address_key(employee, address):
    """Key('Employee', employee, 'Address', address), after checking both ids."""
    if not isinstance(employee, str) or not EMPLOYEE_ID.match(employee):
        raise InputError("invalid_request", "The employee id must be 1-64 characters of A-Z a-z 0-9 . _ @ -.",
                         "employee")
    if isinstance(address, str):
        # ASCII digits only: str.isdigit() and int() also take "²" (an error) and "١" (read as 1).
        address = int(address) if re.fullmatch(r"[0-9]{1,16}", address) else 0
    if isinstance(address, bool) or not isinstance(address, int) or not 1 <= address <= MAX_ADDRESS_ID:
        raise InputError("invalid_request", "The address id must be an integer from 1 to 2^53.", "address")
    return ndb.Key(Employee, employee, Address, address)


def copy_slot(source, target=None):
    """The identity fields of `source` copied into `target` (a new Slot when None)."""
    target = target if target is not None else Slot()
    for name in SLOT_FIELDS:
        value = getattr(source, name)
        setattr(target, name, list(value) if isinstance(value, list) else value)
    return target


def has_current(entity):
    """True when the entity holds a current identity (not only a pending key or a next one)."""
    return entity is not None and bool(entity.chain_pem)


def new_event(key, action, actor, after=None, before=None, public_key=None):
    """A history event for `key` (put in the same transaction as the change)."""
    return Event(parent=key, at=datetime.datetime.now(UTC), actor=actor or "unknown", action=action,
                 fingerprint_sha256=after, previous_fingerprint_sha256=before, public_key_sha256=public_key)


def entity_size(entity):
    """The entity's size as Datastore receives it: its serialized protobuf, in bytes."""
    return datastore_helpers.entity_to_protobuf(ndb_model._entity_to_ds_entity(entity))._pb.ByteSize()


def check_size(entity):
    """TooLarge, before anything is written, when Datastore would refuse the entity for its size."""
    size = entity_size(entity)
    if size > ENTITY_BUDGET:
        where = "/".join(str(part) for part in entity.key.flat()[1::2]) if entity.key else "this record"
        raise TooLarge(f"The record for {where} would be {size:,} bytes with this change; Datastore stores at most "
                       f"{MAX_ENTITY_BYTES:,} bytes per entity (current, next and previous identities and the "
                       "pending key together). Nothing was changed: remove the next or previous identity, or "
                       "use a smaller certificate chain or CA bundle.")


def save_with_event(entity, event):
    """Write the entity and its history event (inside the caller's transaction: one commit), or TooLarge."""
    check_size(entity)
    entity.put()
    event.put()


def ensure_employee(key):
    """Create the parent Employee of `key` if it does not exist yet."""
    if key.parent().get() is None:
        Employee(key=key.parent()).put()
