"""The cipher sealing stored secrets, its keys and the settings that give them."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from payorch.adapters.persistence.tables import webhook_endpoints
from payorch.adapters.secret_cipher import (
    InvalidSecretKeys,
    SecretCipher,
    SecretKey,
    SecretUnreadable,
    create_key_file,
    is_sealed,
    parse_keys,
)
from payorch.secrets_wiring import local_key_file, secret_cipher
from payorch.settings import InvalidSettings, Settings
from payorch.webhooks import SECRET_PREFIX, generate_secret

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
B64_A = base64.b64encode(KEY_A).decode()
B64_B = base64.b64encode(KEY_B).decode()
ROW = "webhook_endpoints.signing_key of we_1"


def cipher(*keys: tuple[str, bytes]) -> SecretCipher:
    return SecretCipher([SecretKey(i, k) for i, k in keys])


def test_a_sealed_value_opens_to_what_was_sealed_and_holds_none_of_it():
    signing_key = generate_secret().removeprefix(SECRET_PREFIX)
    c = cipher(("a", KEY_A))
    stored = c.seal(signing_key, ROW)
    assert stored.startswith("enc1:a:") and signing_key not in stored
    assert c.unseal(stored, ROW) == signing_key
    assert c.seal(signing_key, ROW) != stored, "a fresh nonce each time"


def test_another_key_under_the_same_id_does_not_open_it():
    stored = cipher(("a", KEY_A)).seal("secret", ROW)
    with pytest.raises(SecretUnreadable, match="does not open under key id 'a'"):
        cipher(("a", KEY_B)).unseal(stored, ROW)


def test_a_value_copied_to_another_row_or_column_does_not_open():
    c = cipher(("a", KEY_A))
    stored = c.seal("secret", ROW)
    with pytest.raises(SecretUnreadable, match="we_2"):
        c.unseal(stored, "webhook_endpoints.signing_key of we_2")
    with pytest.raises(SecretUnreadable):
        c.unseal(stored, "webhook_endpoints.previous_signing_key of we_1")


@pytest.mark.parametrize("at", [8, 20, -3])  # the nonce, the ciphertext, the tag
def test_a_tampered_value_does_not_open(at):
    c = cipher(("a", KEY_A))
    stored = c.seal("secret", ROW)
    at %= len(stored)
    flipped = "B" if stored[at] != "B" else "C"
    tampered = stored[:at] + flipped + stored[at + 1 :]
    with pytest.raises(SecretUnreadable, match="altered"):
        c.unseal(tampered, ROW)


@pytest.mark.parametrize("body", ["", "AAAA", "not base64 at all!"])
def test_a_truncated_or_garbled_value_does_not_open(body):
    with pytest.raises(SecretUnreadable):
        cipher(("a", KEY_A)).unseal(f"enc1:a:{body}", ROW)


def test_a_value_under_a_key_id_not_configured_names_the_id_and_what_to_do():
    stored = cipher(("old", KEY_A)).seal("secret", ROW)
    with pytest.raises(SecretUnreadable) as caught:
        cipher(("new", KEY_B)).unseal(stored, ROW)
    message = str(caught.value)
    assert "'old'" in message and "PAYORCH_SECRETS_KEY" in message and ROW in message
    assert B64_A not in message and B64_B not in message


def test_every_key_opens_and_the_first_seals():
    old = cipher(("old", KEY_A)).seal("secret", ROW)
    both = cipher(("new", KEY_B), ("old", KEY_A))
    assert both.unseal(old, ROW) == "secret"
    assert both.write_key_id == "new" and not both.is_current(old)
    assert both.is_current(both.seal("secret", ROW))


def test_a_value_stored_before_encryption_is_read_as_it_is():
    signing_key = generate_secret().removeprefix(SECRET_PREFIX)
    c = cipher(("a", KEY_A))
    assert not is_sealed(signing_key)
    assert c.unseal(signing_key, ROW) == signing_key
    assert not c.is_current(signing_key)


def test_a_sealed_signing_key_under_the_longest_key_id_fits_its_column():
    c = cipher(("x" * 16, KEY_A))
    stored = c.seal(generate_secret().removeprefix(SECRET_PREFIX), ROW)
    for column in ("signing_key", "previous_signing_key"):
        assert len(stored) <= webhook_endpoints.c[column].type.length


def test_keys_are_parsed_with_or_without_an_id_the_first_sealing():
    keys = parse_keys(f"new:{B64_B}, {B64_A}\n")
    assert [k.key for k in keys] == [KEY_B, KEY_A]
    assert keys[0].key_id == "new" and keys[1].key_id.startswith("k")
    assert parse_keys(B64_A)[0].key_id == keys[1].key_id, "an id derived from the key alone"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "holds no key"),
        (" , ", "holds no key"),
        (B64_A[:-4], "key 1 is not the base64 of 32 bytes"),
        (f"a:{B64_A},b:" + base64.b64encode(b"short").decode(), "key 2 is not"),
        (f"a b:{B64_A}", "key 1 is not"),
        (f"bad/id:{B64_A}", "id before ':'"),
        (f"{'x' * 17}:{B64_A}", "id before ':'"),
        (f"a:{B64_A},a:{B64_B}", "given twice"),
    ],
)
def test_keys_that_cannot_be_used_are_refused_without_quoting_them(text, says):
    with pytest.raises(InvalidSecretKeys, match=says) as caught:
        parse_keys(text)
    assert B64_A not in str(caught.value) and B64_B not in str(caught.value)


def test_the_same_key_twice_is_one_key():
    assert len(parse_keys(f"a:{B64_A},a:{B64_A}")) == 1


def test_a_key_file_is_made_once_with_mode_0600(tmp_path):
    path = tmp_path / "key"
    assert create_key_file(path) is True
    first = path.read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert create_key_file(path) is False and path.read_text() == first
    assert len(parse_keys(first)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["key"], "no temporary file left"


# -- settings ---------------------------------------------------------------------------
def test_the_key_comes_from_its_variable_or_its_file_and_is_never_in_repr(tmp_path):
    assert Settings.from_env({"PAYORCH_SECRETS_KEY": f"a:{B64_A}"}).secrets_key == f"a:{B64_A}"
    (tmp_path / "k").write_text(f"a:{B64_A}\nold:{B64_B}\n")
    settings = Settings.from_env({"PAYORCH_SECRETS_KEY_FILE": str(tmp_path / "k")})
    assert secret_cipher(settings).key_ids == ("a", "old")
    assert B64_A not in repr(settings)


def test_a_bad_key_setting_is_refused_naming_the_variable_never_the_key():
    settings = Settings(database_url="sqlite://", secrets_key=B64_A[:-8])
    with pytest.raises(InvalidSettings, match="PAYORCH_SECRETS_KEY") as caught:
        secret_cipher(settings)
    assert B64_A[:-8] not in str(caught.value)


def test_postgresql_without_a_key_is_refused_at_start():
    settings = Settings(database_url="postgresql://u@127.0.0.1/db", secrets_key="")
    with pytest.raises(InvalidSettings, match=r"PAYORCH_SECRETS_KEY .*is not set"):
        secret_cipher(settings)
    assert secret_cipher(
        Settings(database_url="postgresql://u@127.0.0.1/db", secrets_key=B64_A)
    ).key_ids


def test_a_sqlite_file_without_a_key_gets_a_key_file_beside_it(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'payorch.db'}"
    settings = Settings(database_url=url, secrets_key="")
    first = secret_cipher(settings)
    path = local_key_file(url)
    assert path == tmp_path / "payorch.db.secrets-key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert str(path) in caplog.text
    key_text = path.read_text().split(":", 1)[1].strip()
    assert key_text not in caplog.text
    stored = first.seal("secret", ROW)
    assert secret_cipher(settings).unseal(stored, ROW) == "secret", "the same key again"


def test_a_sqlite_database_in_memory_gets_a_key_of_its_own(tmp_path):
    assert local_key_file("sqlite://") is None
    assert secret_cipher(Settings(database_url="sqlite://", secrets_key="")).key_ids == ("memory",)


def test_a_key_file_that_cannot_be_made_is_refused_naming_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'missing' / 'payorch.db'}"
    with pytest.raises(InvalidSettings, match=r"key file .*missing"):
        secret_cipher(Settings(database_url=url, secrets_key=""))


@pytest.mark.parametrize("name", ["PAYORCH_SECRETS_KEY", "PAYORCH_STRIPE_API_KEY"])
def test_a_secret_file_that_cannot_be_read_is_refused_naming_its_variable(name, tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(InvalidSettings, match=f"{name}_FILE: cannot read .*missing"):
        Settings.from_env({f"{name}_FILE": str(missing)})
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidSettings, match=f"{name}_FILE: .*not text"):
        Settings.from_env({f"{name}_FILE": str(binary)})


def test_a_key_file_others_may_read_is_used_and_warned_about(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'payorch.db'}"
    secret_cipher(Settings(database_url=url, secrets_key=""))
    assert "may be read by other users" not in caplog.text
    local_key_file(url).chmod(0o644)
    assert secret_cipher(Settings(database_url=url, secrets_key="")).key_ids
    assert "may be read by other users (mode 644): chmod 600 it" in caplog.text
