"""API.md's public views of addresses, slots, pending keys and events (metadata only, never key material)."""

from models.entities import UTC


def rfc3339(value):
    """A datetime as RFC 3339 UTC with a Z, or None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_precise(value):
    """RFC 3339 UTC with milliseconds (events of one minute stay in order when read back)."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def identity_view(key, slot):
    """API.md's public view of one identity slot: metadata and target, never key material."""
    return {
        "employee": key.parent().id(), "address": key.id(),
        "subject": slot.subject, "issuer": slot.issuer, "serial": slot.serial,
        "not_before": rfc3339(slot.not_before), "not_after": rfc3339(slot.not_after),
        "fingerprint_sha256": slot.fingerprint_sha256, "san": list(slot.san),
        "key_type": slot.key_type, "chain_length": slot.chain_length,
        "host": slot.host, "port": slot.port, "server_hostname": slot.server_hostname,
        "tls_version": slot.tls_version, "has_ca_certs": bool(slot.ca_certs),
        **key_location(slot),
    }


def key_location(slot):
    """Where the slot's private key is: {"key_location": "datastore"} (sealed), or "cloud_kms" with its name
    and protection level (HSM, SOFTWARE)."""
    if slot.kms_key:
        return {"key_location": "cloud_kms", "kms_key": slot.kms_key, "kms_protection": slot.kms_protection}
    return {"key_location": "datastore"}


def slot_summary(slot):
    """The short form of a next or previous identity in the public view."""
    if slot is None:
        return None
    return {"fingerprint_sha256": slot.fingerprint_sha256, "not_after": rfc3339(slot.not_after),
            "key_type": slot.key_type, "subject": slot.subject, "staged": rfc3339(slot.staged),
            **key_location(slot)}


def pending_summary(pending):
    """What a pending key is, without the key: type, when, which public key, what the CSR asks."""
    if pending is None:
        return None
    return {"key_type": pending.key_type, "created": rfc3339(pending.created),
            "public_key_sha256": pending.public_key_sha256, "subject": pending.subject,
            "san": list(pending.san), **key_location(pending)}


def public_view(entity):
    """API.md's public view of an Address (its current identity) with its lifecycle summaries."""
    return dict(identity_view(entity.key, entity), updated=rfc3339(entity.updated),
                created=rfc3339(entity.created), next=slot_summary(entity.next),
                previous=slot_summary(entity.previous), pending=pending_summary(entity.pending))


def event_view(event):
    """A history event as API.md shows it (fingerprints only, never key material)."""
    view = {"at": rfc3339_precise(event.at), "actor": event.actor, "action": event.action,
            "fingerprint_sha256": event.fingerprint_sha256,
            "previous_fingerprint_sha256": event.previous_fingerprint_sha256}
    if event.public_key_sha256:
        view["public_key_sha256"] = event.public_key_sha256
    return view
