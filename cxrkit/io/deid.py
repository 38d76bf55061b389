"""Pseudonymisation: keyed pseudonyms, per-patient date shifts, salted path tokens.

Why HMAC-SHA256 with a secret salt and not a plain hash: identifiers such as
patient IDs, accession numbers and dates come from small, guessable spaces, so an
unkeyed hash is reversed by hashing every candidate. With a 32-byte secret key
(the salt) nobody without the key can compute, test or reverse a pseudonym, while
the key holder gets the same pseudonym for the same value on every run, which
keeps patients, studies and images linked across shards and re-runs.

The salt lives only in the salt file the user controls (created with mode 0600).
It is never written into an artifact, a manifest, a log or an error message; the
manifest may record that a salt was used, never its value. Keep the salt file to
make later ingests link to earlier ones; destroy it to make the pseudonyms
unlinkable for good.

Dates are shifted by a per-patient offset derived from the same key, so every date
of one patient moves by the same number of days and intervals between studies are
preserved, while calendar dates are not recoverable without the salt.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from datetime import date, timedelta
from pathlib import Path

from cxrkit.errors import InputError

log = logging.getLogger(__name__)

SALT_BYTES = 32
MIN_SALT_BYTES = 16  # shorter keys make brute force of small ID spaces feasible
# Every date of a patient moves back by one fixed offset in this range (1 to 10 years):
# large enough that the true date cannot be guessed within a season, and always into
# the past so shifted dates never lie in the future.
DATE_SHIFT_MIN_DAYS = -3650
DATE_SHIFT_MAX_DAYS = -365
SAFE_HARBOR_MAX_AGE = 90.0  # HIPAA Safe Harbor: ages over 89 are aggregated to 90+


def load_or_create_salt(path: str | Path) -> bytes:
    """Read the hex salt in `path`, creating a new random one if the file is absent.

    Takes: the salt file path. A new file holds 32 random bytes as hex, mode 0600;
    creation is atomic (a hard link of a finished temp file), so concurrent workers
    all end up with the same salt.
    Returns: the salt bytes.
    Raises: InputError when the file cannot be read or does not hold >= 16 bytes of hex.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        _create_salt_file(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise InputError(f"cannot read the salt file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise InputError(
            f"the salt file {path} is not a regular file (a folder, FIFO or device); "
            "point --salt-file at a file"
        )
    if info.st_mode & 0o077:
        log.warning(
            "the salt file %s can be read by other users (mode %o); anyone who reads it can "
            "reverse the pseudonyms: chmod 600 %s",
            path,
            stat.S_IMODE(info.st_mode),
            path,
        )
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the salt file {path}: {exc}") from exc
    try:
        salt = bytes.fromhex(text)
    except ValueError as exc:
        raise InputError(
            f"the salt file {path} must hold one hexadecimal string; fix it, or move it away "
            "to create a new salt (pseudonyms will then change)"
        ) from exc
    if len(salt) < MIN_SALT_BYTES:
        raise InputError(
            f"the salt in {path} is {len(salt)} bytes; at least {MIN_SALT_BYTES} are needed"
        )
    return salt


def salt_fingerprint(salt: bytes) -> str:
    """A keyed 16-hex fingerprint of the salt (never the salt itself), stored in the
    params of every artifact made under it so that artifacts pseudonymised with other
    salts are told apart (:func:`cxrkit.io.linkage.check_same_salt`). Never raises."""
    return hmac.new(salt, b"cxrkit-salt-fingerprint", "sha256").hexdigest()[:16]


def _create_salt_file(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            os.fchmod(fh.fileno(), 0o600)  # in case the umask or filesystem widened it
            fh.write(secrets.token_bytes(SALT_BYTES).hex() + "\n")
        try:
            os.link(tmp, path)  # fails if another process created it first: use theirs
            log.warning(
                "created a new pseudonymisation salt at %s: keep it secret, and keep it to "
                "get the same pseudonyms on later runs",
                path,
            )
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    except OSError as exc:
        raise InputError(f"cannot create the salt file {path}: {exc.strerror or exc}") from exc


def parse_date(value: str | None) -> date | None:
    """Parse "YYYYMMDD" (DICOM DA) or "YYYY-MM-DD"; None when absent or invalid."""
    text = (value or "").strip().replace("-", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def safe_harbor_age(age: float | None) -> float | None:
    """Cap an age at 90 years (ages over 89 identify people: HIPAA Safe Harbor)."""
    return None if age is None else min(float(age), SAFE_HARBOR_MAX_AGE)


class Pseudonymizer:
    """Keyed pseudonyms and date shifts from one secret salt.

    Takes: `salt`, the secret key (see :func:`load_or_create_salt`). The salt is kept
    in memory only and is left out of ``repr``.
    """

    def __init__(self, salt: bytes) -> None:
        if len(salt) < MIN_SALT_BYTES:
            raise InputError(f"the salt must be at least {MIN_SALT_BYTES} bytes")
        self._salt = bytes(salt)

    def __repr__(self) -> str:
        return "Pseudonymizer(salt=<hidden>)"

    def _digest(self, namespace: str, value: str) -> bytes:
        # surrogateescape: a file name that is not UTF-8 still gets its own stable token
        message = f"{namespace}\x00{value}".encode("utf-8", "surrogateescape")
        return hmac.new(self._salt, message, hashlib.sha256).digest()

    def pseudonym(self, namespace: str, value: str, length: int = 20) -> str:
        """HMAC-SHA256(salt, namespace + NUL + value) as hex, first `length` characters.

        The namespace ("patient", "study", "image"...) keeps equal strings of
        different kinds apart. 20 hex characters = 80 bits: collisions are negligible
        below ~10^11 values. Raises: ValueError for a length outside 1..64.
        """
        if not 1 <= length <= 64:
            raise ValueError(f"length must be in 1..64, got {length}")
        return self._digest(namespace, value).hex()[:length]

    def date_offset_days(self, patient_key: str) -> int:
        """The patient's fixed date shift, in [DATE_SHIFT_MIN_DAYS, DATE_SHIFT_MAX_DAYS]."""
        span = DATE_SHIFT_MAX_DAYS - DATE_SHIFT_MIN_DAYS + 1
        draw = int.from_bytes(self._digest("date_offset", patient_key)[:8], "big")
        return DATE_SHIFT_MIN_DAYS + draw % span  # modulo bias < 1e-15 with 64 bits

    def shift_date(self, yyyymmdd: str | None, patient_key: str) -> str | None:
        """Shift a date by the patient's offset.

        Takes: "YYYYMMDD" (or "YYYY-MM-DD") and the patient key (the raw patient ID,
        or any value stable per patient). Returns: ISO "YYYY-MM-DD", or None when the
        date is missing or unparseable.
        """
        parsed = parse_date(yyyymmdd)
        if parsed is None:
            return None
        try:
            return (parsed + timedelta(days=self.date_offset_days(patient_key))).isoformat()
        except OverflowError:  # a date within 10 years of 0001-01-01
            return None

    def path_token(self, path: str | os.PathLike[str]) -> str:
        """A salted token standing for a source path (paths often hold names or MRNs)."""
        return self.pseudonym("path", os.fspath(path))
