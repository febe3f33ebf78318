"""Loading the pseudonymization key from the environment or a file (never from a recipe)."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import warnings
from functools import lru_cache
from pathlib import Path

from medflow.deid.errors import DeidKeyError

MIN_KEY_BYTES = 16


def load_key(env_var: str | None = None, key_file: str | os.PathLike[str] | None = None) -> bytes:
    """Return the secret key from ``$env_var`` or from ``key_file`` (exactly one of the two).

    The environment value is used as UTF-8 text; a key file is read as bytes with one trailing
    newline stripped. A key file that group or others can read triggers a warning (it should be
    mode 0600).

    Raises:
        DeidKeyError: neither or both sources given, variable unset or empty, file missing or
            unreadable, or key shorter than 16 bytes.
    """
    if (env_var is None) == (key_file is None):
        raise DeidKeyError("give exactly one key source: an environment variable or a key file")
    if env_var is not None:
        value = os.environ.get(env_var)
        if not value:
            raise DeidKeyError(f"environment variable {env_var} with the de-identification key is not set")
        key = value.encode("utf-8")
        where = f"environment variable {env_var}"
    else:
        path = Path(key_file)  # type: ignore[arg-type]
        try:
            mode = path.stat().st_mode
            key = path.read_bytes()
        except OSError as exc:
            raise DeidKeyError(f"{path}: cannot read the de-identification key file: {exc.strerror}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.warn(
                f"{path}: key file is readable by group or others (mode {stat.S_IMODE(mode):04o}); "
                "use chmod 600",
                stacklevel=2,
            )
        key = key[:-1] if key.endswith(b"\n") else key
        key = key[:-1] if key.endswith(b"\r") else key
        where = str(path)
    if len(key) < MIN_KEY_BYTES:
        raise DeidKeyError(f"{where}: the de-identification key has {len(key)} bytes; at least {MIN_KEY_BYTES} needed")
    return key


def key_id(key: bytes) -> str:
    """A public fingerprint of ``key``: 16 hex characters of HMAC-SHA256(key, "medflow-key-id").

    It tells two keys apart (a rotated key changes cache keys and is recorded in the manifest)
    without revealing the key or helping to guess it: computing it needs the key.
    """
    return _key_id(bytes(key))


@lru_cache(maxsize=8)  # asked for by the step and the writer of every item
def _key_id(key: bytes) -> str:
    return hmac.new(key, b"medflow-key-id", hashlib.sha256).hexdigest()[:16]
