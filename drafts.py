"""Upload drafts: the secrets of a form that failed elsewhere, sealed server-side for a few minutes.

A form shown again never carries a private key or a password; the browser gets only a random
draft id in a hidden field, and the next post of the form picks the secrets up from here.
"""

import datetime
import json
import secrets

from google.cloud import ndb

import sealing

DRAFT_SECONDS = 600  # long enough to fix a typo, short enough not to become a second key store
SECRET_FIELDS = ("key", "key_password", "pkcs12", "pkcs12_password")
UTC = datetime.timezone.utc


class UploadDraft(ndb.Model):
    """Sealed secrets of one failed upload form; deleted when used or after DRAFT_SECONDS."""

    wrapped_dek = ndb.BlobProperty(required=True)
    sealed = ndb.BlobProperty(required=True)
    kek_id = ndb.TextProperty()
    expires = ndb.DateTimeProperty(tzinfo=UTC, required=True)


def _context(draft_id):
    """Associated data: a sealed draft opens only under its own id."""
    return f"upload-draft/{draft_id}".encode()


def _valid_id(draft_id):
    return isinstance(draft_id, str) and 20 <= len(draft_id) <= 64 and draft_id.replace("-", "").replace(
        "_", "").isalnum()


def keep(settings, values, now=None):
    """Seal the secret fields of `values` (those given) into a new draft; returns its id, or None."""
    kept = {name: values[name] for name in SECRET_FIELDS if values.get(name)}
    if not kept.get("key") and not kept.get("pkcs12"):
        return None
    purge_expired(now)  # abandoned drafts go when the next one comes: no cron needed
    draft_id = secrets.token_urlsafe(24)
    kek = sealing.kek_from_settings(settings)
    wrapped, sealed = sealing.seal(kek, json.dumps(kept).encode(), _context(draft_id))
    now = now or datetime.datetime.now(UTC)
    UploadDraft(id=draft_id, wrapped_dek=wrapped, sealed=sealed, kek_id=kek.kek_id,
                expires=now + datetime.timedelta(seconds=DRAFT_SECONDS)).put()
    return draft_id


def take(settings, draft_id, now=None):
    """The secrets kept under `draft_id` ({} when unknown, expired or not openable)."""
    if not _valid_id(draft_id):
        return {}
    draft = UploadDraft.get_by_id(draft_id)
    if draft is None:
        return {}
    if draft.expires <= (now or datetime.datetime.now(UTC)):
        draft.key.delete()
        return {}
    try:
        plain = sealing.unseal(sealing.kek_from_settings(settings), draft.wrapped_dek, draft.sealed,
                               _context(draft_id))
    except sealing.UnsealError:
        return {}
    return json.loads(plain)


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
