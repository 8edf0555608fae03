"""Upload drafts: the secrets of a form that failed elsewhere, sealed server-side for a few minutes.

A form shown again never carries a private key or a password; the browser gets only a random
draft id in a hidden field, and the next post of the form picks the secrets up from here.
A draft serves only the session that made it, for the identity and slot (current or next) it was
made for, and only once: taking it deletes it in a transaction, and its binding is in the sealing's
associated data, so a Datastore writer who edits the entity's fields cannot move it either.
"""

import datetime
import json
import secrets
from typing import NamedTuple

from google.cloud import ndb

import sealing

DRAFT_SECONDS = 600  # long enough to fix a typo, short enough not to become a second key store
SECRET_FIELDS = ("key", "key_password", "pkcs12", "pkcs12_password")
UTC = datetime.timezone.utc
REFUSED = "draft_refused"
PASTE_AGAIN = "paste the private key (or choose the key or PKCS#12 file) again."


class Binding(NamedTuple):
    """Whom and what a draft is for: the session that made it, the employee/address, the slot."""

    owner: str     # the session (its record's id) and principal, see handlers.admin.pages
    employee: str
    address: str
    slot: str      # "current" (upload or replace) or "next" (stage as next)


class DraftRefused(Exception):
    """A draft id that cannot serve this post: the form asks for the key again (code draft_refused)."""

    code = REFUSED
    field = "key"  # shown beside the key field

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class UploadDraft(ndb.Model):
    """Sealed secrets of one failed upload form; deleted when used or after DRAFT_SECONDS."""

    wrapped_dek = ndb.BlobProperty(required=True)
    sealed = ndb.BlobProperty(required=True)
    kek_id = ndb.TextProperty()
    expires = ndb.DateTimeProperty(tzinfo=UTC, required=True)
    # The binding in clear, for a precise refusal; the associated data is what enforces it.
    owner = ndb.TextProperty()
    employee = ndb.TextProperty()
    address = ndb.TextProperty()
    slot = ndb.TextProperty()


def _context(draft_id, binding):
    """Associated data: a sealed draft opens only under its own id and binding (v2; v1 was the id alone)."""
    return json.dumps(["upload-draft/v2", draft_id, *binding]).encode()


def _valid_id(draft_id):
    return isinstance(draft_id, str) and 20 <= len(draft_id) <= 64 and draft_id.replace("-", "").replace(
        "_", "").isalnum()


def keep(settings, values, binding, now=None):
    """Seal the secret fields of `values` (those given) into a new draft bound to `binding`; its id, or None."""
    kept = {name: values[name] for name in SECRET_FIELDS if values.get(name)}
    if not kept.get("key") and not kept.get("pkcs12"):
        return None
    purge_expired(now)  # abandoned drafts go when the next one comes: no cron needed
    draft_id = secrets.token_urlsafe(24)
    kek = sealing.kek_from_settings(settings)
    wrapped, sealed = sealing.seal(kek, json.dumps(kept).encode(), _context(draft_id, binding))
    now = now or datetime.datetime.now(UTC)
    UploadDraft(id=draft_id, wrapped_dek=wrapped, sealed=sealed, kek_id=kek.kek_id,
                expires=now + datetime.timedelta(seconds=DRAFT_SECONDS), **binding._asdict()).put()
    return draft_id


def take(settings, draft_id, binding, now=None):
    """(secrets, None) for the draft `draft_id` made under `binding`, deleting it; ({}, None) without an id;
    ({}, DraftRefused) for an id that is unknown, used, expired, or made by another session, for another
    identity or slot (the draft is deleted then too: its id was shown where it should not be used)."""
    if not draft_id:
        return {}, None
    draft = _consume(draft_id) if _valid_id(draft_id) else None
    if draft is None:
        return {}, DraftRefused("The key kept for this form is gone (used once already, expired, or unknown): "
                                + PASTE_AGAIN)
    if draft.expires <= (now or datetime.datetime.now(UTC)):
        return {}, DraftRefused(f"The key kept for this form expired after {DRAFT_SECONDS // 60} minutes: "
                                + PASTE_AGAIN)
    if draft.owner != binding.owner:
        return {}, DraftRefused("The key was kept for another sign-in session: " + PASTE_AGAIN)
    if (draft.employee, draft.address, draft.slot) != (binding.employee, binding.address, binding.slot):
        return {}, DraftRefused(f"The key was kept for {draft.employee}/{draft.address} "
                                f"({'as next' if draft.slot == 'next' else 'current'}), not this upload: "
                                + PASTE_AGAIN)
    try:
        plain = sealing.unseal(sealing.kek_from_settings(settings), draft.wrapped_dek, draft.sealed,
                               _context(draft_id, binding))
    except sealing.UnsealError:
        return {}, DraftRefused("The key kept for this form does not open for this session and upload: "
                                + PASTE_AGAIN)
    return json.loads(plain), None


@ndb.transactional()
def _consume(draft_id):
    """The draft, deleted in the same transaction: of two posts racing with one id, one gets it."""
    draft = UploadDraft.get_by_id(draft_id)
    if draft is not None:
        draft.key.delete()
    return draft


def forget(draft_id):
    """Delete a draft (after a successful upload, or when new secrets replace it)."""
    if _valid_id(draft_id):
        ndb.Key(UploadDraft, draft_id).delete()


def purge_expired(now=None):
    """Delete drafts past their time."""
    now = now or datetime.datetime.now(UTC)
    keys = UploadDraft.query(UploadDraft.expires <= now).fetch(keys_only=True)
    ndb.delete_multi(keys)
    return len(keys)
