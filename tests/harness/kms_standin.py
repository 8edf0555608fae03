"""The KMS STAND-IN lives in devserver/kms_standin.py (tests and `make run` share it); old imports keep working."""

from devserver.kms_standin import CORRUPTIONS, SERVICE, Algorithm, KmsStandIn, State, Version, crc32c, new_private_key  # noqa: F401
