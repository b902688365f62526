"""Staff users and API tokens."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from core.clock import utc_now
from core.config import Settings
from infoscreen.commands.common import open_session, password_options, read_password


def _cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


def _staff_change(settings: Settings, change: Callable) -> tuple[bool, object]:
    """Run change(session) in one transaction; a refusal becomes one line on stderr."""
    from core.staff import StaffError

    try:
        with open_session(settings) as session, session.begin():
            return True, change(session)
    except StaffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False, None


def _user_change(settings: Settings, change: Callable, *args: object) -> tuple[bool, object]:
    """Run change(session, *args) from core.staff as this command line's user."""
    return _staff_change(settings, lambda session: change(
        session, *args, now=utc_now(), actor=_cli_actor()))


def _print_password(given: str | None, password: str) -> None:
    if given is None:
        print(f"password (shown once, store it now): {password}")


def cmd_user_add(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import add_user, generate_password

    if _user_exists(settings, args.name):
        # Adding never resets: a new password or role, and enabling, each end old sessions
        # and are audited as what they are.
        print(f"error: user {args.name!r} already exists; nothing was changed. For a new "
              f"password: infoscreen user passwd {args.name}; to let a disabled user sign in "
              f"again: infoscreen user enable {args.name}; for another role: infoscreen user "
              f"role {args.name} --role ROLE", file=sys.stderr)
        return 2
    given = read_password(args)
    password = given or generate_password()
    ok, _ = _user_change(settings, add_user, args.name, args.role, password)
    if not ok:
        return 2
    print(f"user {args.name!r} can sign in with role {args.role}")
    _print_password(given, password)
    return 0


def _user_exists(settings: Settings, username: str) -> bool:
    from sqlalchemy import select

    from core.models import User

    with open_session(settings) as session:
        return session.scalar(select(User.id).where(User.username == username)) is not None


def cmd_user_passwd(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import generate_password, set_password

    given = read_password(args)
    password = given or generate_password()
    ok, _ = _user_change(settings, set_password, args.name, password)
    if not ok:
        return 2
    print(f"user {args.name!r} has a new password; every session they had has ended")
    _print_password(given, password)
    return 0


def _report_user_change(settings: Settings, change: Callable, args: tuple, done: str,
                        unchanged: str) -> int:
    """Run a user change that may find nothing to do, and say which happened."""
    ok, changed = _user_change(settings, change, *args)
    if not ok:
        return 2
    print(done if changed else unchanged)
    return 0


def cmd_user_disable(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import disable_user

    return _report_user_change(
        settings, disable_user, (args.name,),
        f"user {args.name!r} is disabled: every session they had has ended and they cannot "
        "sign in",
        f"user {args.name!r} was already disabled; nothing was changed")


def cmd_user_remove(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import remove_user

    ok, _ = _user_change(settings, remove_user, args.name)
    if not ok:
        return 2
    print(f"removed user {args.name!r}; their sessions have ended (the audit log keeps the "
          "name)")
    return 0


def cmd_user_enable(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import enable_user

    return _report_user_change(
        settings, enable_user, (args.name,),
        f"user {args.name!r} can sign in again (sessions from before stay ended)",
        f"user {args.name!r} is not disabled; nothing was changed")


def cmd_user_role(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import set_role

    return _report_user_change(
        settings, set_role, (args.name, args.role),
        f"user {args.name!r} has role {args.role}; every session they had has ended, they "
        "sign in again to use it",
        f"user {args.name!r} already has role {args.role}; nothing was changed")


def cmd_user_list(settings: Settings, _args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from core.models import User

    with open_session(settings) as session:
        users = session.scalars(select(User).order_by(User.username)).all()
        for user in users:
            state = "disabled" if user.disabled_at else "active"
            last = user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "-"
            print(f"{user.username:<24} {user.role:<9} {state:<9} last sign-in {last}")
    print(f"{len(users)} users")
    return 0


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import create_token

    name = args.name or f"script-{args.role}"
    ok, token = _staff_change(settings, lambda session: create_token(
        session, name, args.role, now=utc_now(), actor=_cli_actor()))
    if not ok:
        return 2
    print(f"API token {name!r} with role {args.role}; send it as "
          "'Authorization: Bearer <token>'")
    print(f"token (shown once, store it now): {token}")
    return 0


def cmd_token_list(settings: Settings, _args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from core.models import ApiToken

    with open_session(settings) as session:
        tokens = session.scalars(select(ApiToken).order_by(ApiToken.created_at)).all()
        for t in tokens:
            state = "revoked" if t.revoked_at else "active"
            print(f"{t.id}  {t.name:<24} {t.role:<9} {state:<8} by {t.created_by}")
    print(f"{len(tokens)} tokens")
    return 0


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import revoke_token

    ok, _ = _staff_change(settings, lambda session: revoke_token(
        session, args.id, now=utc_now(), actor=_cli_actor()))
    if not ok:
        return 2
    print(f"revoked API token {args.id}")
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    roles = ("viewer", "operator", "admin")
    p = add("user", None, "manage the staff who sign in to the web app")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    u = usub.add_parser("add", help="create a user (refuses an existing one)",
                        description="Create a staff user. Roles: viewer < operator < admin. "
                        "Prints a generated password once unless one is given. Refuses a user "
                        "that exists (exit status 2, nothing changed): use `user passwd`, "
                        "`user enable` or `user role` for them.")
    u.add_argument("name")
    u.add_argument("--role", required=True, choices=roles)
    password_options(u)
    u.set_defaults(func=cmd_user_add)
    u = usub.add_parser("passwd", help="give a user a new password; ends their sessions",
                        description="Give a staff user a new password: prints a generated one "
                        "once unless one is given. Every session the user signed in to before "
                        "ends at once; the change is audited.")
    u.add_argument("name")
    password_options(u)
    u.set_defaults(func=cmd_user_passwd)
    u = usub.add_parser("disable", help="stop a user signing in; ends their sessions",
                        description="Disable a staff user: they cannot sign in, and every "
                        "session they signed in to ends at once. Audited; `user enable` undoes "
                        "it. Their password and role are kept.")
    u.add_argument("name")
    u.set_defaults(func=cmd_user_disable)
    u = usub.add_parser("enable", help="let a disabled user sign in again",
                        description="Enable a disabled staff user: they can sign in again with "
                        "their password. Sessions from before they were disabled stay ended. "
                        "Audited.")
    u.add_argument("name")
    u.set_defaults(func=cmd_user_enable)
    u = usub.add_parser("remove", help="delete a user; ends their sessions",
                        description="Delete a staff user for good (`user disable` keeps them). "
                        "Their sessions end; the audit log keeps their name. Audited.")
    u.add_argument("name")
    u.set_defaults(func=cmd_user_remove)
    u = usub.add_parser("role", help="change a user's role; ends their sessions",
                        description="Give a staff user another role (viewer < operator < admin). "
                        "Every session they signed in to before ends at once, so the new role "
                        "applies from their next sign-in. Audited.")
    u.add_argument("name")
    u.add_argument("--role", required=True, choices=roles)
    u.set_defaults(func=cmd_user_role)
    u = usub.add_parser("list", help="list the users and their roles")
    u.set_defaults(func=cmd_user_list)

    p = add("token", None, "manage API tokens for scripts")
    tsub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    t = tsub.add_parser("create", help="create an API token (printed once)",
                        description="Create an API token for scripts, sent as "
                        "'Authorization: Bearer <token>'. Only its hash is stored.")
    t.add_argument("--name", help="what the token is for, e.g. zabbix (default: script-ROLE)")
    t.add_argument("--role", required=True, choices=roles)
    t.set_defaults(func=cmd_token_create)
    t = tsub.add_parser("list", help="list the API tokens")
    t.set_defaults(func=cmd_token_list)
    t = tsub.add_parser("revoke", aliases=["remove"], help="revoke an API token by its id")
    t.add_argument("id")
    t.set_defaults(func=cmd_token_revoke)
