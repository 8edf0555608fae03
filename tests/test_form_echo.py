"""Issue 20 item 4: a private key pasted into any text field of any form never comes back in the answer.

The forms are enumerated from the rendered pages (every <form> of the sign-in, list, upload, stage-next,
detail and rotation pages), and each of their text fields gets each key shape in turn: PEM blocks of every
private key label (PKCS#8, RSA, EC, ENCRYPTED, OPENSSH), a block cut short either end, the key inside
other text, and base64 PKCS#8 and PKCS#12 blobs without armour. The twin: ordinary values are still
shown again, so the filter removes keys, not the form's memory.
"""

import base64
import html.parser
import json
import re

import pytest
import webtest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.harness.browser import signed_in
from tests.harness.app import ADMIN_TOKEN
from tests.harness.ports import refused_port

API = "/api/v1/employees/asalieri/addresses/{}"
PAGE = "/admin/employees/asalieri/addresses/{}"
PASSWORD = b"form-echo-password"


class Forms(html.parser.HTMLParser):
    """Every <form> of a page: its action, method and fields (name -> default value), files apart."""

    def __init__(self):
        super().__init__()
        self.forms, self._form, self._textarea, self._select = [], None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._form = {"action": a.get("action", ""), "method": a.get("method", "get").lower(),
                          "multipart": "multipart" in a.get("enctype", ""), "fields": {}, "files": []}
            self.forms.append(self._form)
        elif self._form is None or "name" not in a:
            return
        elif tag == "input" and a.get("type") == "file":
            self._form["files"].append(a["name"])
        elif tag == "input":
            self._form["fields"][a["name"]] = a.get("value") or ""
        elif tag == "textarea":
            self._textarea = a["name"]
            self._form["fields"][a["name"]] = ""
        elif tag == "select":
            self._select = a["name"]
            self._form["fields"][a["name"]] = None
        if tag == "option" and self._select:
            value = a.get("value")
            if self._form["fields"][self._select] is None or "selected" in a:
                self._form["fields"][self._select] = value  # None: the option's text (handle_data)

    def handle_data(self, data):
        if self._textarea:
            self._form["fields"][self._textarea] += data
        elif self._select and self._form["fields"][self._select] is None:
            self._form["fields"][self._select] = data.strip()

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None


def forms_of(page):
    parser = Forms()
    parser.feed(page.text)
    return parser.forms


def key_shapes():
    """(name, text to paste, needles that must not come back) for each shape of private key."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    none = serialization.NoEncryption()
    encrypted = serialization.BestAvailableEncryption(PASSWORD)
    blocks = {
        "pkcs8": rsa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, none),
        "rsa": rsa_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, none),
        "ec": ec_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, none),
        "encrypted": rsa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, encrypted),
        "openssh": ec_key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, none),
    }
    publics = [k.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
               for k in (rsa_key, ec_key)]

    def lines(block):  # base64 lines of the key not also in its public key (an EC key ends with it)
        return [line for line in block.decode().splitlines()
                if len(line) >= 16 and "-----" not in line and not any(line in p for p in publics)]

    shapes = [(name, block.decode(), lines(block)) for name, block in blocks.items()]
    whole = blocks["pkcs8"].decode()
    half = len(whole) // 2
    shapes += [("cut_end", whole[:half], lines(blocks["pkcs8"][:half])[:-1]),
               ("cut_start", whole[half:], lines(blocks["pkcs8"][half:])[1:]),
               ("inside_text", "see below\n" + blocks["ec"].decode() + "\nthanks", lines(blocks["ec"]))]
    for name, data in (("der_base64", rsa_key.private_bytes(der, serialization.PrivateFormat.PKCS8, none)),
                       ("pkcs12_base64", pkcs12.serialize_key_and_certificates(b"x", rsa_key, None, None,
                                                                                encrypted))):
        blob = base64.b64encode(data).decode()
        shapes.append((name, blob, [blob[i:i + 24] for i in range(24, len(blob) - 24, 48)]))
    return shapes


@pytest.fixture(scope="module")
def shapes():
    return key_shapes()


@pytest.fixture
def world(app, upload):
    """asalieri/1 with a current identity (its target refuses at once); asalieri/2 with only a pending key."""
    api = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {ADMIN_TOKEN}"})
    api.put(API.format(1), json.dumps(dict(upload, host="127.0.0.1", server_hostname="localhost",
                                           port=refused_port())), content_type="application/json", status=201)
    api.post(API.format(1) + "/csr", json.dumps({"subject": {"CN": "one"}}), content_type="application/json",
             status=201)
    api.post(API.format(2) + "/csr", json.dumps({"subject": {"CN": "two"}}), content_type="application/json",
             status=201)
    browser, _ = signed_in(app, ADMIN_TOKEN)
    return browser


def every_form(app, browser):
    """(client, page path, form) for every form of every page, each action once."""
    pages = [(webtest.TestApp(app), "/signin")]
    pages += [(browser, path) for path in ("/admin", "/admin/new", "/admin/new?stage=next&employee=asalieri&address=1",
                                           PAGE.format(1), PAGE.format(2))]
    seen, found = set(), []
    for client, path in pages:
        for form in forms_of(client.get(path)):
            if (form["action"], tuple(form["fields"])) in seen or form["action"] == "/signout":
                continue
            seen.add((form["action"], tuple(form["fields"])))
            found.append((client, path, form))
    return found


def submit(client, path, form, values):
    """Fill the form (from a fresh copy of its page: a fresh CSRF token) and send it."""
    fresh = next(f for f in forms_of(client.get(path)) if f["action"] == form["action"])
    fields = dict(fresh["fields"], **values)
    if form["method"] == "get":
        return client.get(form["action"], fields, expect_errors=True)
    if form["multipart"]:
        return client.post(form["action"], fields, upload_files=[], content_type="multipart/form-data",
                           expect_errors=True)
    return client.post(form["action"], fields, expect_errors=True)


def test_the_forms_are_all_found(app, world):
    actions = {form["action"].split("#")[0] for _, _, form in every_form(app, world)}
    for action in ("/signin", "/admin", "/admin/new", PAGE.format(1) + "/csr", PAGE.format(2) + "/next",
                   PAGE.format(2) + "/csr", PAGE.format(1) + "/request", PAGE.format(1) + "/echo"):
        assert action in actions, actions


def test_a_key_in_any_text_field_of_any_form_never_comes_back(app, world, shapes):
    posted, leaks = 0, []
    for client, path, form in every_form(app, world):
        for name in form["fields"]:
            if name == "csrf_token":
                continue
            for shape, text, needles in shapes:
                assert needles, shape
                response = submit(client, path, form, {name: text})
                posted += 1
                # 502: the test calls reach the stored target, which refuses at once (connection_refused)
                assert response.status_int < 500 or response.status_int == 502, (form["action"], name, shape,
                                                                                  response.status)
                body = response.text
                if any(needle in body for needle in needles) or "PRIVATE KEY-----" in body:
                    leaks.append((form["action"].split("#")[0], name, shape, response.status_int))
    assert posted > 200
    assert not leaks, "\n".join(map(str, leaks))  # every (form, field, key shape) that showed key material


def test_the_twin_ordinary_values_are_shown_again(app, world, upload):
    csr = world.get(PAGE.format(2))
    token = re.search(r'name="csrf_token" value="([^"]+)"', csr.text).group(1)
    # The CSR form: a country of three letters is refused; the rest comes back as typed.
    page = world.post(PAGE.format(2) + "/csr", {"csrf_token": token, "key_type": "EC-P256", "CN": "Ordinary Name",
                                               "O": "Example Org", "C": "XYZ", "dns": "a.example.com"}, status=400)
    for value in ("Ordinary Name", "Example Org", "XYZ", "a.example.com"):
        assert value in page.text
    # The stage-next form: a certificate that is not one is refused; the server as typed comes back.
    page = world.post(PAGE.format(2) + "/next", {"csrf_token": token, "cert": "not a certificate",
                                                "host": "typed.example.com", "port": "8443",
                                                "server_hostname": "sni.example.com"},
                      upload_files=[], content_type="multipart/form-data", status=400)
    for value in ("typed.example.com", "8443", "sni.example.com"):
        assert value in page.text
    # The upload form: a certificate (public) and the host come back after a refused key.
    page = world.post("/admin/new", {"csrf_token": token, "employee": "asalieri", "address": "3",
                                     "cert": upload["cert"], "key": "not a key", "host": "kept.example.com",
                                     "port": "8443"}, upload_files=[], content_type="multipart/form-data", status=400)
    assert "kept.example.com" in page.text
    assert upload["cert"].splitlines()[1] in page.text
    # The request form: the path and body as typed (the target refuses: 502 connection_refused).
    page = world.post(PAGE.format(1) + "/request", {"csrf_token": token, "method": "POST", "path": "/typed/path",
                                                   "headers": "X-Typed: 1", "body": "ordinary body"}, status=502)
    for value in ("/typed/path", "X-Typed: 1", "ordinary body"):
        assert value in page.text
    assert "ordinary search" in world.get("/admin", {"q": "ordinary search"}).text
