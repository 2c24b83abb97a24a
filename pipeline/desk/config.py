"""Who may use the desk and how it is reached: users, API token, session key, Dagster UI address.

Everything comes from the environment (the same place the WordPress password and API keys come from):

- `PIPELINE_DESK_USERS`: `name:hash` pairs separated by whitespace, hashes as `pipeline desk hash-password`
  prints them (Argon2id). `PIPELINE_DESK_USERS_FILE` names a file of such lines (one per line, `#` comments);
  without either, the embedded default's file `data/local/desk-users` is used (`pipeline desk add-user`).
- `PIPELINE_DESK_API_TOKEN`: the bearer token of the JSON API (unset: the API answers 401 to everyone).
  Only its SHA-256 is kept in memory; `PIPELINE_DESK_API_ACTOR` names it in the review history (`api`).
- `PIPELINE_DESK_SECRET`: the key that signs session cookies; unset, a random key per process (everyone
  signs in again after a restart). `PIPELINE_DESK_SECURE_COOKIES=1` behind HTTPS.
- `PIPELINE_DAGSTER_URL`: where the Dagster UI is, for the links of the sites page (`http://127.0.0.1:3000`).

Passwords are never stored or logged in clear: a user entry is only ever a hash.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from pipeline import settings

DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
DEFAULT_API_ACTOR = "api"
# A user name as it appears in the review history (`desk:<name>`): short, no spaces or separators.
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HASHER = PasswordHasher()


class DeskConfigError(ValueError):
    """Desk settings that cannot work (a malformed user entry, no users at all...); the message says which."""


def hash_password(password: str) -> str:
    """The Argon2id hash of a password, as a user entry stores it."""
    if len(password) < 8:
        raise DeskConfigError("a desk password needs at least 8 characters")
    return _HASHER.hash(password)


def users_file() -> Path:
    """The file of `name:hash` lines: `PIPELINE_DESK_USERS_FILE`, else `desk-users` in the data directory."""
    return Path(os.environ.get("PIPELINE_DESK_USERS_FILE") or settings.data_dir() / "desk-users")


def parse_users(text: str, *, source: str) -> dict[str, str]:
    """`name:hash` entries (whitespace or newlines between them, `#` starts a comment) as {name: hash}."""
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        for entry in line.split("#", 1)[0].split():
            name, colon, encoded = entry.partition(":")
            if not colon or not _USER_NAME.match(name) or not encoded.startswith("$argon2"):
                # Never echo the entry: it may be a password pasted where a hash belongs.
                raise DeskConfigError(
                    f"{source} line {number}: a user entry must be NAME:HASH with the hash from "
                    "`pipeline desk hash-password` (the entry is not shown here)"
                )
            users[name] = encoded
    return users


def write_user(path: Path, name: str, password: str) -> None:
    """Add or replace `name` in a users file (only the hash is written; the file is readable by its owner)."""
    if not _USER_NAME.match(name):
        raise DeskConfigError(f"user name {name!r}: letters, digits and . _ @ - only, at most 64 characters")
    users = parse_users(path.read_text(encoding="utf-8"), source=str(path)) if path.exists() else {}
    users[name] = hash_password(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(f"{user}:{encoded}\n" for user, encoded in sorted(users.items())), encoding="utf-8")
    partial.chmod(0o600)
    partial.replace(path)


@dataclass(frozen=True)
class DeskConfig:
    """The desk's settings, resolved once when the app is built."""

    users: Mapping[str, str]
    secret_key: str = field(repr=False)
    api_token_sha256: str | None = field(default=None, repr=False)
    api_actor: str = DEFAULT_API_ACTOR
    dagster_url: str = DEFAULT_DAGSTER_URL
    secure_cookies: bool = False
    session_max_age_s: int = 12 * 3600

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> DeskConfig:
        """Read the settings above; `DeskConfigError` names what is wrong."""
        env = os.environ if environ is None else environ
        users: dict[str, str] = {}
        if env.get("PIPELINE_DESK_USERS"):
            users.update(parse_users(env["PIPELINE_DESK_USERS"], source="PIPELINE_DESK_USERS"))
        else:
            path = Path(env.get("PIPELINE_DESK_USERS_FILE") or users_file())
            if path.exists():
                users.update(parse_users(path.read_text(encoding="utf-8"), source=str(path)))
        token = env.get("PIPELINE_DESK_API_TOKEN") or None
        if token is not None and len(token) < 16:
            raise DeskConfigError("PIPELINE_DESK_API_TOKEN must be at least 16 characters (the token is not shown)")
        return cls(
            users=users,
            secret_key=env.get("PIPELINE_DESK_SECRET") or secrets.token_urlsafe(32),
            api_token_sha256=_sha256(token) if token else None,
            api_actor=env.get("PIPELINE_DESK_API_ACTOR") or DEFAULT_API_ACTOR,
            dagster_url=(env.get("PIPELINE_DAGSTER_URL") or DEFAULT_DAGSTER_URL).rstrip("/"),
            secure_cookies=env.get("PIPELINE_DESK_SECURE_COOKIES", "").lower() in {"1", "true", "yes"},
        )

    def check_password(self, name: str, password: str) -> bool:
        """Whether `password` is the user's (constant work whether or not the user exists)."""
        encoded = self.users.get(name)
        try:
            return _HASHER.verify(encoded or _dummy_hash(), password) and encoded is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def check_api_token(self, token: str) -> bool:
        """Whether `token` is the API's bearer token (compared in constant time, by digest)."""
        return self.api_token_sha256 is not None and hmac.compare_digest(_sha256(token), self.api_token_sha256)


@functools.cache
def _dummy_hash() -> str:
    # Verifying against a made-up hash when the user does not exist costs the same as a wrong password, so
    # the answer time does not tell which user names exist.
    return _HASHER.hash(secrets.token_urlsafe(16))


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
