"""`pipeline desk`: serve the review desk, and manage who may sign in to it.

    pipeline desk [--host 127.0.0.1] [--port 3001]
    pipeline desk add-user NAME [--password-stdin]
    pipeline desk hash-password [--password-stdin]

With no user configured at all (no `PIPELINE_DESK_USERS`, no users file), serving creates the user
`editor` with a random password, prints it once and keeps only its hash, so `make demo && make ui` can be
signed in to at once. Production sets `PIPELINE_DESK_USERS` (hashes from `hash-password`) instead.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys

from pipeline.cli.base import UsageError, open_store
from pipeline.desk import config

DEFAULT_PORT = 3001
FIRST_USER = "editor"


def add_desk_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`desk` (serve), `desk add-user` and `desk hash-password`."""
    desk = commands.add_parser("desk", help="the review desk web app (sign in, read, compare, approve, publish)")
    desk.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    desk.add_argument("--port", type=int, default=int(os.environ.get("DESK_PORT") or DEFAULT_PORT), help="port")
    desk.set_defaults(handler=_serve)
    actions = desk.add_subparsers(dest="desk_action")
    add = actions.add_parser("add-user", help="add or replace a desk user in the users file (only a hash is kept)")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(handler=_add_user)
    hashed = actions.add_parser("hash-password", help="print a password's hash for PIPELINE_DESK_USERS")
    hashed.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    hashed.set_defaults(handler=_hash_password)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.desk import create_app

    try:
        settings = config.DeskConfig.from_environment()
        if not settings.users and not os.environ.get("PIPELINE_DESK_USERS"):
            settings = _first_user()
    except config.DeskConfigError as error:
        raise UsageError(str(error)) from error
    app = create_app(open_store(), settings)
    print(f"Review desk on http://{args.host}:{args.port}/  (users: {', '.join(sorted(settings.users))})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=False)
    return 0


def _first_user() -> config.DeskConfig:
    password = secrets.token_urlsafe(12)
    path = config.users_file()
    config.write_user(path, FIRST_USER, password)
    print(
        f"No desk users yet: created user '{FIRST_USER}' with password {password}\n"
        f"  (printed only now; {path} keeps only its hash; change it with: pipeline desk add-user {FIRST_USER})",
        flush=True,
    )
    return config.DeskConfig.from_environment()


def _add_user(args: argparse.Namespace) -> int:
    password = _password(args.password_stdin)
    try:
        config.write_user(config.users_file(), args.name, password)
    except config.DeskConfigError as error:
        raise UsageError(str(error)) from error
    print(f"Desk user {args.name} saved in {config.users_file()} (its password only as a hash).")
    return 0


def _hash_password(args: argparse.Namespace) -> int:
    try:
        print(config.hash_password(_password(args.password_stdin)))
    except config.DeskConfigError as error:
        raise UsageError(str(error)) from error
    return 0


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise UsageError("the two passwords differ")
    return first
