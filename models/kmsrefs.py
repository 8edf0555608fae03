"""When a Cloud KMS key version the app created may be destroyed: once no slot of any address refers to it."""

import kmskeys
from models.entities import Address


def release(before, settings):
    """After a committed change: destroy each app-created key in `before` that no Address refers to any more.

    `before` is owned_kms_names() of the entity as it was; the query sees every address (a kms_key
    given in a PUT elsewhere keeps the key alive), so a referenced key is never destroyed.
    Returns the names scheduled for destruction.
    """
    destroyed = []
    for name in sorted(before):
        if Address.query(Address.kms_keys == name).get(keys_only=True) is None and kmskeys.destroy(name, settings):
            destroyed.append(name)
    return destroyed

