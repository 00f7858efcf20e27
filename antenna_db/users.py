"""Antenna's users, tokens and project permissions, as its API checks them
(docs/antenna-db.md section 4).

Tokens are ``authtoken_token`` rows (plaintext keys, one per user) of active users. Object
permissions are guardian's, through the project's role groups (``"<id>_<name>_<Role>"``);
superusers hold every one. What antenna-jobs adds (a token's name and expiry) lives in our own
``token_meta`` table, keyed by a hash of the key.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection
from pydantic import BaseModel

from antenna_db import cachalot
from core.errors import InvalidJobInput

USER_TABLES = (
    "users_user",
    "authtoken_token",
    "auth_group",
    "guardian_groupobjectpermission",
    "users_user_groups",
    "main_userprojectmembership",
)

_PROJECT_TYPE = (
    "(SELECT id FROM django_content_type WHERE app_label = 'main' AND model = 'project')"
)
_HAS_PERM = f"""
SELECT u.is_active AND (u.is_superuser
  OR EXISTS (SELECT 1 FROM guardian_userobjectpermission o
             JOIN auth_permission p ON p.id = o.permission_id
             WHERE o.user_id = u.id AND o.object_pk = %(project)s::text
               AND o.content_type_id = {_PROJECT_TYPE} AND p.content_type_id = {_PROJECT_TYPE}
               AND p.codename = %(codename)s)
  OR EXISTS (SELECT 1 FROM guardian_groupobjectpermission o
             JOIN users_user_groups ug ON ug.group_id = o.group_id
             JOIN auth_permission p ON p.id = o.permission_id
             WHERE ug.user_id = u.id AND o.object_pk = %(project)s::text
               AND o.content_type_id = {_PROJECT_TYPE} AND p.content_type_id = {_PROJECT_TYPE}
               AND p.codename = %(codename)s)) AS allowed
FROM users_user u WHERE u.id = %(user)s
"""


class Role(StrEnum):
    BASIC_MEMBER = "BasicMember"
    ML_DATA_MANAGER = "MLDataManager"
    PROJECT_MANAGER = "ProjectManager"


_BASIC = (
    "view_project",
    "view_private_data",
    "star_sourceimage",
    "create_job",
    "run_single_image_ml_job",
    "view_userprojectmembership",
)
_ML_DATA_MANAGER = (
    *_BASIC,
    "update_job",
    "run_ml_job",
    "create_projectpipelineconfig",
    "update_projectpipelineconfig",
    "delete_projectpipelineconfig",
    "run_populate_captures_collection_job",
    "run_data_storage_sync_job",
    "run_regroup_events_job",
    "run_data_export_job",
    "sync_deployment",
    "delete_occurrences",
    "create_sourceimagecollection",
    "update_sourceimagecollection",
    "delete_sourceimagecollection",
    "populate_sourceimagecollection",
)


def role_codenames(role: Role) -> tuple[str, ...] | None:
    """The project permissions of a role (None: every project permission there is)."""
    return {Role.BASIC_MEMBER: _BASIC, Role.ML_DATA_MANAGER: _ML_DATA_MANAGER}.get(role)


class Caller(BaseModel):
    """The user a request's token belongs to."""

    user_id: int
    email: str
    is_superuser: bool
    is_active: bool
    expires_at: datetime | None = None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= datetime.now(UTC)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def fingerprint(key: str) -> str:
    """What logs show of a key (Antenna logs 8 characters too)."""
    return key[:8]


async def caller(conn: AsyncConnection[Any], key: str) -> Caller | None:
    """The token's user (inactive or expired ones included, for the right 401), or None."""
    cur = await conn.execute(
        "SELECT u.id AS user_id, u.email, u.is_superuser, u.is_active, m.expires_at"
        " FROM authtoken_token t JOIN users_user u ON u.id = t.user_id"
        " LEFT JOIN token_meta m ON m.key_hash = %s WHERE t.key = %s",
        (key_hash(key), key),
    )
    row = await cur.fetchone()
    return Caller.model_validate(row) if row else None


async def has_perm(
    conn: AsyncConnection[Any], user_id: int, codename: str, project_id: int
) -> bool:
    cur = await conn.execute(
        _HAS_PERM, {"user": user_id, "codename": codename, "project": project_id}
    )
    row = await cur.fetchone()
    return bool(row and row["allowed"])


def _holds(user: str, project_pk: str, codename: str) -> str:
    """SQL: user ``user`` holds ``codename`` on the project whose id (as text) is
    ``project_pk``, through a guardian user or group object permission (superusers: check
    is_superuser first, this does not)."""
    return (
        f"(EXISTS (SELECT 1 FROM guardian_userobjectpermission o"
        f" JOIN auth_permission p ON p.id = o.permission_id"
        f" WHERE o.user_id = {user} AND o.object_pk = {project_pk}"
        f" AND o.content_type_id = {_PROJECT_TYPE} AND p.content_type_id = {_PROJECT_TYPE}"
        f" AND p.codename = {codename})"
        f" OR EXISTS (SELECT 1 FROM guardian_groupobjectpermission o"
        f" JOIN users_user_groups ug ON ug.group_id = o.group_id"
        f" JOIN auth_permission p ON p.id = o.permission_id"
        f" WHERE ug.user_id = {user} AND o.object_pk = {project_pk}"
        f" AND o.content_type_id = {_PROJECT_TYPE} AND p.content_type_id = {_PROJECT_TYPE}"
        f" AND p.codename = {codename}))"
    )


def runnable_jobs(job: str = "j") -> str:
    """SQL: user %(runner)s may fetch tasks of and post results for job ``job`` (the check of
    api/access.py ``worker_job``: ``run_ml_job`` on its project, ``run_single_image_ml_job`` for
    a single-image job); %(runner)s NULL: everyone may (a superuser)."""
    codename = (
        f"(CASE WHEN {job}.source_image_single_id IS NULL THEN 'run_ml_job'"
        f" ELSE 'run_single_image_ml_job' END)"
    )
    return (
        f"(%(runner)s::bigint IS NULL OR "
        f"{_holds('%(runner)s', f'{job}.project_id::text', codename)})"
    )


async def projects_with_perm(conn: AsyncConnection[Any], user_id: int, codename: str) -> list[int]:
    """The projects on which the (non-superuser) user holds ``codename``."""
    holds = _holds("%(user)s", "pr.id::text", "%(codename)s")
    cur = await conn.execute(
        f"SELECT pr.id FROM main_project pr WHERE {holds}",
        {"user": user_id, "codename": codename},
    )
    return [int(r["id"]) for r in await cur.fetchall()]


def visible_projects(alias: str = "p") -> str:
    """SQL: the project ``alias`` is visible to user %(viewer)s (superusers: pass NULL)."""
    return (
        f"(%(viewer)s::bigint IS NULL OR {alias}.draft = false OR {alias}.owner_id = %(viewer)s"
        f" OR EXISTS (SELECT 1 FROM main_userprojectmembership vm"
        f" WHERE vm.project_id = {alias}.id AND vm.user_id = %(viewer)s))"
    )


async def can_see_project(conn: AsyncConnection[Any], who: Caller, project_id: int) -> bool:
    cur = await conn.execute(
        f"SELECT 1 FROM main_project p WHERE p.id = %(project)s AND {visible_projects()}",
        {"project": project_id, "viewer": None if who.is_superuser else who.user_id},
    )
    return await cur.fetchone() is not None


async def _role_group(conn: AsyncConnection[Any], project_id: int, role: Role) -> int:
    """The project's role group, made (with its guardian permissions) if missing."""
    cur = await conn.execute("SELECT id, name FROM main_project WHERE id = %s", (project_id,))
    project = await cur.fetchone()
    if project is None:
        raise InvalidJobInput("project", f"project {project_id} does not exist")
    name = f"{project['id']}_{project['name']}_{role.value}"[:150]
    await conn.execute(
        "INSERT INTO auth_group (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,)
    )
    cur = await conn.execute("SELECT id FROM auth_group WHERE name = %s", (name,))
    group = await cur.fetchone()
    assert group is not None
    codenames = role_codenames(role)
    await conn.execute(
        "INSERT INTO guardian_groupobjectpermission (object_pk, content_type_id, group_id,"
        " permission_id)"
        " SELECT %(project)s::text, p.content_type_id, %(group)s, p.id FROM auth_permission p"
        f" WHERE p.content_type_id = {_PROJECT_TYPE}"
        " AND (%(codenames)s::text[] IS NULL OR p.codename = ANY(%(codenames)s::text[]))"
        " ON CONFLICT DO NOTHING",
        {
            "project": project_id,
            "group": group["id"],
            "codenames": list(codenames) if codenames is not None else None,
        },
    )
    return int(group["id"])


SYSTEM_EMAIL = "antenna-jobs@antenna-jobs.invalid"


async def system_user(conn: AsyncConnection[Any]) -> int:
    """The user that owns what antenna-jobs creates on nobody's behalf (an export row made from
    the command line: Antenna requires a user)."""
    cur = await conn.execute(
        "INSERT INTO users_user (password, last_login, is_superuser, email, is_staff, is_active,"
        " date_joined, name, image) VALUES (%s, NULL, false, %s, false, false, now(),"
        " 'antenna-jobs', NULL) ON CONFLICT (email) DO NOTHING RETURNING id",
        ("!" + secrets.token_hex(20), SYSTEM_EMAIL),
    )
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute("SELECT id FROM users_user WHERE email = %s", (SYSTEM_EMAIL,))
        row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


class TokenRow(BaseModel):
    fingerprint: str
    user_id: int
    email: str
    name: str | None
    is_superuser: bool
    is_active: bool
    created: datetime
    expires_at: datetime | None
    projects: list[str]


async def create_token_user(
    conn: AsyncConnection[Any],
    name: str,
    *,
    project_id: int | None = None,
    role: Role | None = None,
    superuser: bool = False,
    expires_in: timedelta | None = None,
) -> str:
    """A new user (no usable password) with a new token; a member of ``project_id`` in
    ``role`` if given. Returns the key (shown once)."""
    if (project_id is None) != (role is None):
        raise InvalidJobInput("role", "--project and --role go together")
    key = secrets.token_hex(20)
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO users_user (password, last_login, is_superuser, email, is_staff,"
            " is_active, date_joined, name, image)"
            " VALUES (%s, NULL, %s, %s, false, true, now(), %s, NULL) RETURNING id",
            (
                "!" + secrets.token_hex(20),
                superuser,
                f"worker-{uuid.uuid4().hex[:12]}@antenna-jobs.invalid",
                name[:255],
            ),
        )
        user = await cur.fetchone()
        assert user is not None
        await conn.execute(
            "INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, now(), %s)",
            (key, user["id"]),
        )
        await conn.execute(
            "INSERT INTO token_meta (key_hash, user_id, name, expires_at)"
            " VALUES (%s, %s, %s, now() + %s)",
            (key_hash(key), user["id"], name, expires_in),
        )
        if project_id is not None and role is not None:
            group = await _role_group(conn, project_id, role)
            await conn.execute(
                "INSERT INTO users_user_groups (user_id, group_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (user["id"], group),
            )
            await conn.execute(
                "INSERT INTO main_userprojectmembership (created_at, updated_at, user_id,"
                " project_id) VALUES (now(), now(), %s, %s) ON CONFLICT DO NOTHING",
                (user["id"], project_id),
            )
    cachalot.wrote(*USER_TABLES)
    return key


async def list_tokens(conn: AsyncConnection[Any]) -> list[TokenRow]:
    cur = await conn.execute(
        "SELECT left(t.key, 8) AS fingerprint, u.id AS user_id, u.email, m.name,"
        " u.is_superuser, u.is_active, t.created, m.expires_at,"
        " coalesce(array_agg(DISTINCT g.name) FILTER (WHERE g.name IS NOT NULL), '{}')"
        " AS projects"
        " FROM authtoken_token t JOIN users_user u ON u.id = t.user_id"
        " LEFT JOIN token_meta m ON m.user_id = u.id"
        " LEFT JOIN users_user_groups ug ON ug.user_id = u.id"
        " LEFT JOIN auth_group g ON g.id = ug.group_id"
        " GROUP BY t.key, u.id, m.name, m.expires_at ORDER BY t.created"
    )
    return [TokenRow.model_validate(r) for r in await cur.fetchall()]


class AmbiguousToken(InvalidJobInput):
    """A key prefix that more than one token starts with: nothing was revoked."""

    def __init__(self, prefix: str, count: int) -> None:
        super().__init__("token", f"{count} tokens start with {prefix!r}: give more of the key")
        self.prefix = prefix
        self.count = count


async def revoke_token(conn: AsyncConnection[Any], fingerprint_or_key: str) -> int:
    """Delete the one token whose key is, or starts with, this (at least 8 characters).

    The prefix is compared as text (never a LIKE pattern: ``_`` and ``%`` match only
    themselves), and a prefix that several keys share revokes nothing (AmbiguousToken), so one
    command removes one token at most.
    """
    if len(fingerprint_or_key) < 8:
        raise InvalidJobInput("token", "give the key or at least its first 8 characters")
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT key FROM authtoken_token WHERE left(key, %(n)s) = %(prefix)s FOR UPDATE",
            {"n": len(fingerprint_or_key), "prefix": fingerprint_or_key},
        )
        keys = [r["key"] for r in await cur.fetchall()]
        if len(keys) > 1:
            raise AmbiguousToken(fingerprint_or_key, len(keys))
        if keys:
            await conn.execute("DELETE FROM authtoken_token WHERE key = %s", (keys[0],))
            await conn.execute("DELETE FROM token_meta WHERE key_hash = %s", (key_hash(keys[0]),))
    cachalot.wrote("authtoken_token")
    return len(keys)


async def remove_expired_tokens(conn: AsyncConnection[Any]) -> int:
    """Expired tokens go from Antenna's table too, so Antenna's own API refuses them."""
    async with conn.transaction():
        cur = await conn.execute(
            "DELETE FROM token_meta WHERE expires_at <= now() RETURNING key_hash"
        )
        hashes = {r["key_hash"] for r in await cur.fetchall()}
        if not hashes:
            return 0
        cur = await conn.execute("SELECT key FROM authtoken_token")
        keys = [r["key"] for r in await cur.fetchall() if key_hash(r["key"]) in hashes]
        await conn.execute("DELETE FROM authtoken_token WHERE key = ANY(%s)", (keys,))
    cachalot.wrote("authtoken_token")
    return len(keys)
