"""The app's Datastore side, one job per module.

    entities   Employee, Address (current, next, previous, pending slots), Event; address_key; NotFound, Conflict,
               TooLarge (a record over Datastore's entity size, refused before the write)
    body       an upload body (API or form) validated once into an Upload, or errors that carry their field
    binding    the sealing associated data: a key opens only in its entity, for its target, trust and chain
    views      API.md's public views (metadata, never key material)
    store      put, read, list, delete; load_identity: the call path's one Datastore read
    schema     the fields each JSON body may hold (strict bodies: an unknown one is refused by name)
    lifecycle  CSR and pending key, next, promote, rollback, history (one transaction each)
    expiry     the cron's expiry report
    lastcall   LastCall: the call path's one write after a call

Callers import the module they need; the names below stay importable as `models.X` for older code and tests.
"""

from models.binding import SEAL_VERSION, new_slot, pending_context, seal_context, unseal_slot  # noqa: F401
from models.body import (  # noqa: F401
    TLS_VERSION_NAMES, Upload, check_upload, identity_from_body, parse_upload, target_from_body,
    tls_version_from_body)
from models.entities import (  # noqa: F401
    EMPLOYEE_ID, MAX_ADDRESS_ID, SLOT_FIELDS, UTC, Address, Conflict, Employee, Event, NotFound, Pending, Slot,
    address_key, copy_slot, has_current)
from models.expiry import PENDING_WARN_DAYS, expiry_report  # noqa: F401
from models.lastcall import RECORD_EVERY, LastCall, _recorded, last_calls, record_call  # noqa: F401
from models.lifecycle import (  # noqa: F401
    MAX_HISTORY, check_next, create_csr, get_csr, get_next, history, promote, remove_next, rollback, stage_next)
from models.store import (  # noqa: F401
    StoredIdentity, count_identities, delete_identity, get_entity, get_record, list_entities, list_identities,
    list_records, load_identity, load_next, put_identity, stored_identity)
from models.views import (  # noqa: F401
    event_view, identity_view, pending_summary, public_view, rfc3339, rfc3339_precise, slot_summary)
