"""Issue 20 item 5: a kept upload draft serves only the session that made it, for the identity and slot it
was made for, and only once; any other use is refused with draft_refused beside the key (paste it again).

The twin: a valid draft still completes its own upload (current, and staged as next).
"""

import os
import threading

import pytest
from google.cloud import datastore as raw_datastore
from google.cloud import ndb

import drafts
from tests.harness.app import admin_client
from tests.harness.forms import fingerprint, form_fields, post_upload, stored

NEXT = "/api/v1/employees/asalieri/addresses/{}/next"


def kept_draft(browser, upload, **changes):
    """Post the form with a host typo: the good key is kept; returns the draft id."""
    page = post_upload(browser, form_fields(upload, host="bad host!", **changes), status=400)
    return page.html.select_one("input[name=draft]")["value"]


def refused(page):
    """The key field says the kept key cannot be used and asks for it again; no new draft is offered."""
    error = page.html.select_one("#error-key")
    assert error is not None, page.text[:2000]
    assert "paste" in error.text.lower() and "kept" in error.text.lower(), error.text
    return True


def drafts_left():
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        return drafts.UploadDraft.query().fetch()


def test_a_draft_from_another_session_is_refused(app, upload):
    alice, mallory = admin_client(app), admin_client(app)
    draft = kept_draft(alice, upload)
    page = post_upload(mallory, form_fields(upload, key="", draft=draft), status=400)
    assert refused(page)
    assert stored(alice) == []


def test_a_draft_for_another_identity_is_refused(app, upload):
    alice = admin_client(app)
    draft = kept_draft(alice, upload)  # made for asalieri/1
    page = post_upload(alice, form_fields(upload, address="2", key="", draft=draft), status=400)
    assert refused(page)
    draft = kept_draft(alice, upload)
    page = post_upload(alice, form_fields(upload, employee="bsalieri", key="", draft=draft), status=400)
    assert refused(page)
    assert stored(alice) == []


def test_a_draft_for_the_next_slot_is_refused_for_the_current_one_and_back(app, upload):
    alice = admin_client(app)
    draft = kept_draft(alice, upload, stage="next")
    assert refused(post_upload(alice, form_fields(upload, key="", draft=draft), status=400))
    draft = kept_draft(alice, upload)
    assert refused(post_upload(alice, form_fields(upload, key="", draft=draft, stage="next"), status=400))
    assert stored(alice) == []
    alice.get(NEXT.format(1), status=404)


def test_a_draft_is_used_once(app, upload):
    alice = admin_client(app)
    draft = kept_draft(alice, upload)
    post_upload(alice, form_fields(upload, key="", draft=draft))  # the twin: it completes its own upload
    assert stored(alice)[0]["fingerprint_sha256"] == fingerprint(upload["cert"])
    before = stored(alice)
    page = post_upload(alice, form_fields(upload, address="1", key="", draft=draft, host="other.example.com"),
                       status=400)
    assert refused(page)
    assert stored(alice) == before and drafts_left() == []


def test_the_twin_a_valid_draft_completes_its_own_staged_upload(app, upload):
    alice = admin_client(app)
    draft = kept_draft(alice, upload, stage="next")
    post_upload(alice, form_fields(upload, key="", draft=draft, stage="next"))
    assert alice.get(NEXT.format(1)).json["next"]["fingerprint_sha256"] == fingerprint(upload["cert"])
    assert drafts_left() == []


def test_a_draft_rebound_by_a_datastore_writer_does_not_open(app, upload):
    """The binding is in the sealing's associated data, not only in the entity's fields a writer can change."""
    alice, mallory = admin_client(app), admin_client(app)
    draft = kept_draft(alice, upload)
    mine = kept_draft(mallory, upload)
    db = raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])
    theirs, ours = db.get(db.key("UploadDraft", draft)), db.get(db.key("UploadDraft", mine))
    for name in set(ours) - {"wrapped_dek", "sealed", "kek_id", "expires"}:
        theirs[name] = ours[name]  # every binding field now says "mallory's session"
    db.put(theirs)
    assert refused(post_upload(mallory, form_fields(upload, key="", draft=draft), status=400))
    assert stored(alice) == []


def test_two_posts_racing_with_one_draft_use_it_once(app, upload, settings):
    alice = admin_client(app)
    draft = kept_draft(alice, upload)
    [entity] = drafts_left()
    binding = drafts.Binding(entity.owner, "asalieri", "1", "current")
    results, start = [], threading.Barrier(4)

    def use():
        with ndb.Client().context(cache_policy=False, global_cache_policy=False):
            start.wait()
            results.append(drafts.take(settings, draft, binding))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    opened = [kept for kept, refusal in results if kept]
    assert len(opened) == 1 and opened[0]["key"] == upload["key"]
    assert sum(1 for kept, refusal in results if refusal is not None) == 3


@pytest.mark.parametrize("draft", ["", "x" * 32, "not a draft id!"])
def test_the_twin_no_draft_is_no_refusal(app, upload, draft):
    """Without a draft id the form asks for the key as always; a made-up id is refused like a used one."""
    alice = admin_client(app)
    page = post_upload(alice, form_fields(upload, key="", draft=draft), status=400)
    error = page.html.select_one("#error-key").text.lower()
    assert ("kept" in error) == bool(draft)
