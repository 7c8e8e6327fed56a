"""The permission test generated from the URL patterns and the websocket routes (issue 17).

Every route of `django.urls.get_resolver()` (walked recursively) × every HTTP method its
view declares (`view.actions`, set by `access.declare` through `@api` / `@page`) × every
role × the requester's own workspace or another one, plus logged out, is requested, and
the status is checked against `access.POLICY`:

- the object is in another workspace: 404 (ids reveal nothing);
- own workspace, the role may not take the action: 403 (and "conversation.write" on a
  conversation someone else created needs "conversation.write_any" too);
- allowed: not 401/403/404/405 and not a 5xx (a 400 for the empty body is fine: views
  check access before they read the body);
- logged out: 401 under /api/, a redirect to the login page for a page;
- `access.PUBLIC`: answered without a login.

A route whose view declares no policy fails, naming the route, unless it is in
`UNDECLARED_ALLOWED` (the admin site, Django's auth views, static files). The objects
named by a route's kwargs come from `BUILDERS` (one per kwarg name), made fresh for each
case by a separate "author" member of the workspace, so the rules on others' objects are
exercised; a kwarg without a builder fails, saying which builder to add.

The websocket routes (`playground.routing.websocket_urlpatterns`) get the same matrix:
accepted, or closed with 4401 (logged out) / 4403 (no access).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from playground import access
from playground.models import (
    Conversation,
    Invitation,
    Membership,
    Message,
    Preset,
    Provider,
    Run,
    ShareLink,
    Workspace,
    token_digest,
)
from tests.fakes import FakeRelay

ROLES = [str(role) for role in access.ROLES]
WHERE = ("own", "other")


# -- the routes


@dataclass
class Route:
    route: str  # the pattern as text, "api/conversations/<id:conversation_id>/"
    name: str | None
    callback: object
    kwargs: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or self.route

    @property
    def is_api(self) -> bool:
        return self.route.startswith("api/")

    def path(self, values: dict[str, object]) -> str:
        return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), self.route)


def walk(resolver: URLResolver, prefix: str = "") -> list[Route]:
    """Every URL pattern under `resolver`, its route text joined from the resolvers above."""
    routes = []
    for entry in resolver.url_patterns:
        text = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            routes += walk(entry, text)
        elif isinstance(entry, URLPattern):
            text = text.removeprefix("^").removesuffix("$")
            kwargs = re.findall(r"<(?:\w+:)?(\w+)>", text) + re.findall(r"\(\?P<(\w+)>", text)
            routes.append(Route(text, entry.name, entry.callback, kwargs))
    return routes


def undeclared_allowed(route: Route) -> bool:
    """Routes that take no action of the policy: the admin site (staff only, its own
    permissions), Django's auth views (login, logout, password change and reset) and
    static files."""
    if route.route.startswith("admin/"):
        return True
    view_class = getattr(route.callback, "view_class", None)
    if view_class is not None and any(
        klass.__module__.startswith("django.contrib.auth.views") for klass in view_class.__mro__
    ):
        return True
    module = getattr(route.callback, "__module__", "")
    return module.startswith(("django.views.static", "django.contrib.staticfiles"))


ROUTES = walk(get_resolver())
DECLARED = [r for r in ROUTES if getattr(r.callback, "actions", None)]


def test_every_route_declares_its_policy():
    """A new endpoint fails here until its view declares an action per HTTP method."""
    missing = [r for r in ROUTES if not getattr(r.callback, "actions", None) and not undeclared_allowed(r)]
    assert not missing, "\n".join(
        f"{r.label} (/{r.route}) declares no policy: wrap the view in @api(methods={{...}}) (JSON) "
        "or @page(action) (pages), or access.declare(view, {method: access.PUBLIC}) for a public one"
        for r in missing
    )


def test_the_walk_finds_a_view_without_a_policy():
    """The check above can fail: an undeclared view in a URLconf is reported."""
    from django.urls import URLResolver as Resolver
    from django.urls import path
    from django.urls.resolvers import RegexPattern

    def naked(request):  # pragma: no cover - never called
        raise AssertionError

    module = type("urls", (), {"urlpatterns": [path("api/things/<id:thing_id>/", naked, name="things")]})
    routes = walk(Resolver(RegexPattern(r"^/"), module))
    assert [(r.route, r.kwargs, bool(getattr(r.callback, "actions", None))) for r in routes] == [
        ("api/things/<id:thing_id>/", ["thing_id"], False)
    ]
    assert not undeclared_allowed(routes[0])


def test_the_routes_the_policy_depends_on_are_walked():
    names = {r.name for r in DECLARED}
    assert {"api-conversation", "api-submit", "api-preset", "api-probe", "index", "demo-chat"} <= names


# -- the people and the objects


@pytest.fixture(scope="module")
def relay():
    with FakeRelay() as fake:
        yield fake


@dataclass
class World:
    own: Workspace
    other: Workspace
    authors: dict[int, User]  # workspace id -> the member who made the objects
    relay: FakeRelay
    built: dict = field(default_factory=dict)

    def workspace(self, where: str) -> Workspace:
        return self.own if where == "own" else self.other


def make_world(relay: FakeRelay) -> World:
    own = Workspace.objects.create(name="Acme", slug="acme")
    other = Workspace.objects.create(name="Other", slug="other")
    authors = {}
    for workspace in (own, other):
        author = User.objects.create_user(f"author-{workspace.slug}")
        Membership.objects.create(workspace=workspace, user=author, role=Membership.Role.MEMBER)
        authors[workspace.id] = author
    return World(own, other, authors, relay)


def requester(world: World, role: str) -> User:
    user = User.objects.create_user(f"as-{role}")
    Membership.objects.create(workspace=world.own, user=user, role=role)
    return user


def build_conversation(world, workspace, author, route):
    """A shared conversation with one message; in the trash for a route that restores."""
    if "conversation" not in world.built:
        trashed = "restore" in route.route
        conv = Conversation.objects.create(
            workspace=workspace,
            creator=author,
            title="Shared",
            visibility=Conversation.Visibility.SHARED,
            deleted_at=timezone.now() if trashed else None,
            deleted_by=author if trashed else None,
        )
        Message.objects.create(conversation=conv, position=0, role="user", content="Hello")
        world.built["conversation"] = conv
    return world.built["conversation"]


def build_provider(world, workspace, author, route):
    if "provider" not in world.built:
        provider = Provider(workspace=workspace, name="Fake", base_url=world.relay.base_url)
        provider.set_api_key("sk-permissions-test-0000")
        provider.save()
        world.built["provider"] = provider
    return world.built["provider"]


def build_run(world, workspace, author, route):
    if "run" not in world.built:
        conv = build_conversation(world, workspace, author, route)
        provider = build_provider(world, workspace, author, route)
        run = Run.objects.create(
            conversation=conv,
            workspace=workspace,
            user=author,
            provider=provider,
            provider_name=provider.name,
            model="fake-model",
            status=Run.Status.COMPLETED,
            position=1,
        )
        Message.objects.create(conversation=conv, position=1, role="assistant", content="Hi", run=run)
        world.built["run"] = run
    return world.built["run"]


def build_message(world, workspace, author, route):
    run = build_run(world, workspace, author, route)
    return run.messages.get()


def build_preset(world, workspace, author, route):
    return Preset.objects.create(workspace=workspace, owner=author, name="Shared preset", shared=True)


def build_workspace(world, workspace, author, route):
    return workspace


def build_membership(world, workspace, author, route):
    return Membership.objects.get(workspace=workspace, user=author)


def build_invitation(world, workspace, author, route, token=None):
    return Invitation.objects.create(
        workspace=workspace,
        role=Membership.Role.MEMBER,
        token_hash=token_digest(token or secrets.token_urlsafe(16)),
        created_by=author,
    )


def build_share_link(world, workspace, author, route, token=None):
    conv = build_conversation(world, workspace, author, route)
    return ShareLink.objects.create(
        conversation=conv, token_hash=token_digest(token or secrets.token_urlsafe(16)), created_by=author
    )


def build_token(world, workspace, author, route):
    """The token of an invitation (a route about invites or joining) or of a share link; a
    password reset's token is Django's to check (a wrong one shows its "invalid link" page)."""
    token = secrets.token_urlsafe(16)
    if "reset" in route.route:
        return _Token(token)
    if re.search(r"invit|join", route.route + (route.name or "")):
        build_invitation(world, workspace, author, route, token)
    else:
        build_share_link(world, workspace, author, route, token)
    return _Token(token)


def build_uidb64(world, workspace, author, route):
    """A password reset link's user (Django's auth views)."""
    return _Token(urlsafe_base64_encode(force_bytes(author.pk)))


class _Token(str):
    """A raw token: the URL takes the string itself, not an id."""

    pk = None


BUILDERS = {
    "conversation_id": build_conversation,
    "message_id": build_message,
    "run_id": build_run,
    "provider_id": build_provider,
    "preset_id": build_preset,
    "workspace_id": build_workspace,
    "membership_id": build_membership,
    "invitation_id": build_invitation,
    "share_link_id": build_share_link,
    "token": build_token,
    "uidb64": build_uidb64,
}


def url_values(world: World, route: Route, where: str) -> dict[str, object]:
    workspace = world.workspace(where)
    values = {}
    for kwarg in route.kwargs:
        builder = BUILDERS.get(kwarg)
        assert builder is not None, (
            f"{route.label}: no builder for the URL kwarg {kwarg!r}: add build_{kwarg.removesuffix('_id')} "
            f"to BUILDERS in tests/test_permissions.py (name kwargs after their object, e.g. conversation_id)"
        )
        obj = builder(world, workspace, world.authors[workspace.id], route)
        values[kwarg] = obj if isinstance(obj, _Token) else obj.pk
    return values


# -- what the policy expects


LOGIN = "login"
ALLOWED = "allowed"
PUBLIC = "public"


def expected(route: Route, action: str, method: str, role: str | None, where: str, mine: bool = False):
    """The outcome access.POLICY gives `role` for `action` on the route's object, made by
    the author (or by the requester, `mine`) in the `where` workspace."""
    if action == access.PUBLIC:
        return PUBLIC
    if role is None:
        return LOGIN
    if action == access.ACCOUNT:
        return ALLOWED
    if where == "other" and route.kwargs:
        return 404
    if not access.allows(role, action):
        return 403
    if action == "conversation.write" and not mine and not access.allows(role, "conversation.write_any"):
        return 403
    if "preset_id" in route.kwargs and not mine and not access.is_manager(role):
        return 403  # another's shared preset: only owners and admins unshare or delete it
    return ALLOWED


# Bodies for the few cases an empty body cannot reach the allowed path: a manager may
# only unshare another member's preset.
BODIES = {("preset_id", "PATCH"): {"shared": False}}


def body_for(route: Route, method: str) -> bytes:
    for kwarg in route.kwargs:
        if (kwarg, method) in BODIES:
            return json.dumps(BODIES[(kwarg, method)]).encode()
    return b""


@dataclass(frozen=True)
class Case:
    route: Route
    method: str
    role: str | None
    where: str
    mine: bool = False

    @property
    def action(self) -> str:
        return self.route.callback.actions[self.method]

    @property
    def id(self) -> str:
        who = (
            "logged-out"
            if self.role is None
            else f"{self.role} {self.where}" + (" mine" if self.mine else "")
        )
        return f"{self.route.label} {self.method} {who}"


def cases() -> list[Case]:
    out = []
    for route in DECLARED:
        for method, action in route.callback.actions.items():
            # A public view answers everyone alike: one role is enough.
            for role in ["member"] if action == access.PUBLIC else ROLES:
                for where in WHERE:
                    out.append(Case(route, method, role, where))
            out.append(Case(route, method, None, "own"))
            if action == "conversation.write" and "conversation_id" in route.kwargs:
                for role in ("member", "viewer"):  # their own conversation: the creator's rule
                    out.append(Case(route, method, role, "own", mine=True))
    return out


CASES = cases()


def check(case: Case, response, expect) -> None:
    status = response.status_code
    body = b"(streamed)" if response.streaming else response.content[:300]
    said = f"{case.id} ({case.action}): expected {expect}, got {status}: {body!r}"
    location = response.get("Location", "")
    to_login = status in (301, 302) and location.startswith(settings.LOGIN_URL)
    if expect == LOGIN:
        if case.route.is_api:
            assert status == 401, said
        else:
            assert to_login, said
    elif expect == PUBLIC:
        assert not to_login, said
        assert status not in (403, 405), said
        assert status < 500, said
    elif expect == ALLOWED:
        assert not to_login, said
        assert status not in (401, 403, 404, 405), said
        assert status < 500, said
    else:
        assert status == expect, said


@pytest.mark.django_db
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_route_answers_as_the_policy_says(case: Case, relay):
    world = make_world(relay)
    client = Client()
    author = None
    if case.role is not None:
        user = requester(world, case.role)
        client.force_login(user)
        if case.mine:
            author = user
    if author is not None:
        world.authors[world.own.id] = author
    values = url_values(world, case.route, case.where)
    path = case.route.path(values)
    if case.where == "other" and not case.route.kwargs:
        path += f"?workspace={world.other.id}"  # asking for another workspace gives nothing of it
    response = client.generic(
        case.method, path, body_for(case.route, case.method), content_type="application/json"
    )
    check(case, response, expected(case.route, case.action, case.method, case.role, case.where, case.mine))


@pytest.mark.django_db
def test_a_route_without_an_object_never_acts_in_another_workspace(relay):
    """?workspace= of a workspace the user is not in falls back to their own."""
    world = make_world(relay)
    client = Client()
    client.force_login(requester(world, "owner"))
    response = client.post(
        f"/api/conversations/?workspace={world.other.id}", b"{}", content_type="application/json"
    )
    assert response.status_code == 201, response.content
    assert Conversation.objects.get(id=response.json()["id"]).workspace_id == world.own.id
    assert not Conversation.objects.filter(workspace=world.other).exists()


# -- private conversations: a 404 to members who are not its creator nor managers


PRIVATE_ROUTES = [
    ("GET", "/api/conversations/{id}/"),
    ("GET", "/api/conversations/{id}/export.json"),
    ("GET", "/c/{id}/"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "template"), PRIVATE_ROUTES, ids=[f"{m} {t}" for m, t in PRIVATE_ROUTES])
def test_a_private_conversation_of_another_member(relay, role, method, template):
    world = make_world(relay)
    client = Client()
    client.force_login(requester(world, role))
    conv = Conversation.objects.create(
        workspace=world.own, creator=world.authors[world.own.id], visibility=Conversation.Visibility.PRIVATE
    )
    status = client.generic(method, template.format(id=conv.id)).status_code
    assert status == (200 if access.is_manager(role) else 404)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_a_private_conversation_is_written_by_its_creator_and_managers_only(relay, role):
    world = make_world(relay)
    client = Client()
    client.force_login(requester(world, role))
    conv = Conversation.objects.create(
        workspace=world.own, creator=world.authors[world.own.id], visibility=Conversation.Visibility.PRIVATE
    )
    status = client.delete(f"/api/conversations/{conv.id}/").status_code
    assert status == (200 if access.is_manager(role) else 404)
    assert Conversation.objects.filter(id=conv.id, deleted_at__isnull=True).exists() == (
        not access.is_manager(role)
    )


# -- the websocket routes


def ws_routes() -> list[Route]:
    from playground.routing import websocket_urlpatterns

    module = type("ws_urls", (), {"urlpatterns": websocket_urlpatterns})
    from django.urls.resolvers import RegexPattern

    return walk(URLResolver(RegexPattern(r"^/"), module))


WS_ROUTES = ws_routes()
WS_CASES = [
    (route, role, where, private)
    for route in WS_ROUTES
    for role in [*ROLES, None]
    for where in (WHERE if role else ("own",))
    # A private conversation of the author: a 4403 to members who are not managers.
    for private in (
        (False, True) if role and where == "own" and "conversation_id" in route.kwargs else (False,)
    )
]


def ws_id(case) -> str:
    route, role, where, private = case
    who = "logged-out" if role is None else f"{role} {where}"
    return f"ws:{route.label} {who}" + (" private" if private else "")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", WS_CASES, ids=[ws_id(c) for c in WS_CASES])
async def test_websocket_route_answers_as_the_policy_says(case, relay):
    from playground.asgi import application
    from tests.test_relay import headers, session_cookie

    route, role, where, private = case
    await get_channel_layer().flush()

    def setup():
        world = make_world(relay)
        cookie = session_cookie(requester(world, role)) if role else "csrftoken=x"
        values = url_values(world, route, where)
        if private:
            Conversation.objects.filter(id=values["conversation_id"]).update(
                visibility=Conversation.Visibility.PRIVATE
            )
        return cookie, route.path(values)

    cookie, path = await sync_to_async(setup)()
    if role is None:
        expect = 4401
    elif where == "other" or (private and not access.is_manager(role)):
        expect = 4403
    else:
        expect = "accept"
    ws = WebsocketCommunicator(application, path, headers=headers(cookie))
    connected, _ = await ws.connect(timeout=5)
    assert connected  # the consumer accepts, then closes with the reason
    first = await ws.receive_output(timeout=5)
    if expect == "accept":
        # Kept open: its first frame is data (each socket sends its state, "sync", on joining).
        assert first["type"] == "websocket.send", first
        await ws.disconnect()
    else:
        assert first["type"] == "websocket.close", first
        assert first.get("code") == expect, first
