"""Pseudonymisation: salt file handling, keyed pseudonyms, per-patient date shifts."""

from __future__ import annotations

import hashlib
import hmac
import stat
from datetime import date, timedelta

import pytest

from cxrkit.errors import InputError
from cxrkit.io.deid import (
    DATE_SHIFT_MAX_DAYS,
    DATE_SHIFT_MIN_DAYS,
    Pseudonymizer,
    load_or_create_salt,
    safe_harbor_age,
)

SALT_A = bytes(range(32))
SALT_B = bytes(range(1, 33))


def test_salt_file_is_created_private_and_reloaded(tmp_path):
    path = tmp_path / "keys" / "salt.hex"
    salt = load_or_create_salt(path)
    assert len(salt) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == salt.hex()
    assert load_or_create_salt(path) == salt
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_existing_salt_file_is_read_as_hex(tmp_path):
    path = tmp_path / "salt.hex"
    path.write_text("ab" * 32 + "\n")
    assert load_or_create_salt(path) == bytes([0xAB]) * 32


@pytest.mark.parametrize("content", ["not hex at all", "abcd", ""])
def test_invalid_salt_file_raises_input_error(tmp_path, content):
    path = tmp_path / "salt.hex"
    path.write_text(content)
    with pytest.raises(InputError, match="salt"):
        load_or_create_salt(path)


def test_pseudonym_is_truncated_hmac_sha256():
    expected = hmac.new(SALT_A, b"patient\x00123", hashlib.sha256).hexdigest()
    pseudo = Pseudonymizer(SALT_A)
    assert pseudo.pseudonym("patient", "123") == expected[:20]
    assert pseudo.pseudonym("patient", "123", length=64) == expected


def test_pseudonym_is_deterministic_and_depends_on_salt_and_namespace():
    first, again, other = Pseudonymizer(SALT_A), Pseudonymizer(SALT_A), Pseudonymizer(SALT_B)
    assert first.pseudonym("patient", "123") == again.pseudonym("patient", "123")
    assert first.pseudonym("patient", "123") != other.pseudonym("patient", "123")
    assert first.pseudonym("patient", "123") != first.pseudonym("study", "123")


def test_short_salt_is_refused():
    with pytest.raises(InputError):
        Pseudonymizer(b"short")


def test_repr_does_not_show_the_salt():
    assert SALT_A.hex() not in repr(Pseudonymizer(SALT_A))


def test_date_offset_is_stable_and_in_documented_range():
    pseudo = Pseudonymizer(SALT_A)
    offsets = [pseudo.date_offset_days(f"patient-{i}") for i in range(200)]
    assert all(DATE_SHIFT_MIN_DAYS <= o <= DATE_SHIFT_MAX_DAYS for o in offsets)
    assert offsets == [pseudo.date_offset_days(f"patient-{i}") for i in range(200)]
    assert len(set(offsets)) > 150  # spread over the range, not a constant


def test_shift_date_keeps_intervals_within_a_patient():
    pseudo = Pseudonymizer(SALT_A)
    first = date.fromisoformat(pseudo.shift_date("20040826", "9RG1"))
    second = date.fromisoformat(pseudo.shift_date("2004-09-25", "9RG1"))
    assert (second - first).days == 30
    offset = pseudo.date_offset_days("9RG1")
    assert first == date(2004, 8, 26) + timedelta(days=offset)


def test_shift_date_differs_across_salts():
    patients = [f"p{i}" for i in range(5)]
    shifted_a = [Pseudonymizer(SALT_A).shift_date("20200101", p) for p in patients]
    shifted_b = [Pseudonymizer(SALT_B).shift_date("20200101", p) for p in patients]
    assert shifted_a != shifted_b
    assert all(s < "2020-01-01" for s in shifted_a + shifted_b)


@pytest.mark.parametrize("value", [None, "", "2020", "20201340", "abcdefgh", "2020-02-30"])
def test_unparseable_date_shifts_to_none(value):
    assert Pseudonymizer(SALT_A).shift_date(value, "p") is None


def test_path_token_is_salted_and_hides_the_path():
    path = "/data/DOE_JOHN/MRN12345/img.dcm"
    token_a = Pseudonymizer(SALT_A).path_token(path)
    assert token_a == Pseudonymizer(SALT_A).path_token(path)
    assert token_a != Pseudonymizer(SALT_B).path_token(path)
    assert "DOE" not in token_a and len(token_a) == 20


def test_safe_harbor_age_caps_at_90():
    assert safe_harbor_age(95.5) == 90.0
    assert safe_harbor_age(45.0) == 45.0
    assert safe_harbor_age(None) is None
