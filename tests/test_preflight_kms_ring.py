"""tools/preflight.py checks the settings of keys born in Cloud KMS when they are set (#18 item 5)."""

import pytest

from tests.harness.deploy import GOOD_KMS, assert_refused, preflight

GOOD_RING = "projects/dyncert-demo/locations/europe-west1/keyRings/client-keys"


def test_a_key_ring_passes_and_names_the_roles():
    result = preflight("--skip-project", KMS_KEY_NAME=GOOD_KMS, KMS_KEY_RING=GOOD_RING, KMS_PROTECTION="software")
    assert result.returncode == 0, result.stderr
    assert f"KMS_KEY_RING={GOOD_RING}" in result.stdout and "roles/cloudkms.signerVerifier" in result.stdout


@pytest.mark.parametrize("ring", [
    "client-keys",
    GOOD_RING + "/cryptoKeys/k",
    "projects/p/locations/global/keyRings/",
    "projects/P/locations/global/keyRings/r",  # project ids are lower case
])
def test_a_malformed_key_ring_is_refused(ring):
    assert_refused(preflight("--skip-project", KMS_KEY_NAME=GOOD_KMS, KMS_KEY_RING=ring),
                   "is not a Cloud KMS key ring name", "projects/PROJECT/locations/LOCATION/keyRings/RING")


def test_an_unknown_protection_and_a_stand_in_endpoint_are_refused():
    assert_refused(preflight("--skip-project", KMS_KEY_NAME=GOOD_KMS, KMS_PROTECTION="EXTERNAL"),
                   "KMS_PROTECTION from the environment must be HSM or SOFTWARE")
    assert_refused(preflight("--skip-project", KMS_KEY_NAME=GOOD_KMS, KMS_ENDPOINT="127.0.0.1:9000"),
                   "KMS_ENDPOINT is set", "Unset it to deploy")
