"""Issue 17: the permission test generated from the URL patterns and the websocket routes.

Every route of playground/urls.py (walked through `get_resolver()`, included URLconfs
too) and of playground/routing.py is checked, for every HTTP method its view declares
(`view.actions`, set by `api(methods=…)`, `access.page` or `access.declare`), as every
role of a workspace on an object of their own workspace (created by a teammate, and by
themselves) and of another workspace, and logged out, against `access.POLICY`:

- another workspace's object: 404 (the API's JSON 404, the 404 page);
- own workspace, a role the policy refuses: 403 (and "conversation.write" on a
  teammate's conversation needs "conversation.write_any");
- allowed: anything but 401, 403, 404, 405 or a 5xx (an empty body's 400 is fine:
  access is checked before the body is read);
- logged out: 401 under /api/, a redirect to the login page for pages;
- a method the view does not declare: 405.

A route whose view declares nothing, and is not one of `EXEMPT` (Django's own views),
fails here: that is how a new endpoint without a policy fails the suite. URL kwargs are
filled by `BUILDERS`, one per kwarg name; a route with a kwarg no builder knows fails
naming the builder to add.
"""

from __future__ import annotations

import re
import secrets
import sys
import types
from dataclasses import dataclass

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.views.static import serve

from playground import access
from playground.asgi import application
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
from playground.routing import websocket_urlpatterns
from tests.test_relay import headers, session_cookie

ROLES = [str(role) for role in access.ROLES]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Kwargs that are a secret link's token, not an object: their pages are PUBLIC.
TOKEN_KWARGS = ("token",)
# Kwargs naming a conversation or something in one: a private conversation hides them.
CONVERSATION_KWARGS = {"conversation_id", "message_id", "run_id", "share_link_id"}


# ---------------------------------------------------------------------------
# The routes


@dataclass(frozen=True)
class Route:
    name: str
    pattern: str
    view: object
    kwargs: tuple[str, ...]

    @property
    def is_api(self) -> bool:
        return self.pattern.startswith("api/")

    @property
    def actions(self) -> dict[str, str] | None:
        return getattr(self.view, "actions", None)


def exempt(view) -> str | None:
    """Why a view is not the policy's (Django's and third-party views), or None."""
    module = getattr(view, "__module__", "") or ""
    view_class = getattr(view, "view_class", None)
    if module.startswith("django.contrib.admin"):
        return "the Django admin (staff only, its own permissions)"
    if view_class is not None and issubclass(view_class, auth_views.LoginView | auth_views.LogoutView):
        return "Django's auth views"
    if view is serve or module.startswith("django.contrib.staticfiles"):
        return "static files"
    if getattr(view, "__qualname__", "") == "admin_login.<locals>.view":  # playground.logins
        return "the admin site's login (Django's, throttled)"
    return None


def walk(patterns, prefix: str = "", admin: bool = False):
    for entry in patterns:
        here = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from walk(entry.url_patterns, here, admin or entry.app_name == "admin")
        elif isinstance(entry, URLPattern):
            yield entry, here, admin


def url_routes() -> tuple[list[Route], list[str]]:
    """The routes the policy covers, and the undeclared ones (each a message)."""
    routes, undeclared = [], []
    for entry, pattern, in_admin in walk(get_resolver().url_patterns):
        view = entry.callback
        if in_admin or exempt(view):
            continue
        kwargs = tuple(entry.pattern.converters)
        route = Route(entry.name or pattern, pattern, view, kwargs)
        if not route.actions:
            undeclared.append(
                f"/{pattern} ({getattr(view, '__module__', '?')}.{getattr(view, '__name__', view)}) "
                "declares no policy action: wrap it in playground.api.api(methods={method: action}) "
                "or access.page(action), or access.declare(view, {method: access.PUBLIC})"
            )
        elif not entry.name:
            undeclared.append(f"/{pattern} has no URL name: name it, the permission test reverses it")
        else:
            routes.append(route)
    return routes, undeclared


ROUTES, UNDECLARED = url_routes()


def test_every_route_declares_its_policy():
    """A new endpoint without a policy fails here, naming itself."""
    assert not UNDECLARED, "\n".join(UNDECLARED)
    assert ROUTES  # the walk found the routes


def test_the_walk_finds_an_undeclared_view(settings):
    """The check above can fail: an undeclared view in a URLconf is reported."""
    from django.http import HttpResponse
    from django.urls import clear_url_caches, include, path

    def undeclared_view(request):
        return HttpResponse("hello")

    module = types.ModuleType("permissions_probe_urls")
    module.urlpatterns = [path("x/", include([path("y/<id:conversation_id>/", undeclared_view)]))]
    sys.modules["permissions_probe_urls"] = module
    settings.ROOT_URLCONF = "permissions_probe_urls"
    try:
        clear_url_caches()
        routes, undeclared = url_routes()
        assert routes == []
        assert len(undeclared) == 1
        assert "/x/y/<id:conversation_id>/" in undeclared[0]
        assert "declares no policy action" in undeclared[0]
    finally:
        del sys.modules["permissions_probe_urls"]
        clear_url_caches()


# ---------------------------------------------------------------------------
# The objects behind URL kwargs


@dataclass
class World:
    """Two workspaces: `own` (the actor, with `role`, and `author`, a member who creates
    what the actor acts on) and `other` (its owner `stranger`; the actor is not in it)."""

    actor: User
    author: User
    stranger: User
    own: Workspace
    other: Workspace


def make_world(role: str | None) -> World:
    own = Workspace.objects.create(name="Acme", slug="acme")
    other = Workspace.objects.create(name="Elsewhere", slug="elsewhere")
    actor = User.objects.create(username="actor")
    author = User.objects.create(username="author")
    stranger = User.objects.create(username="stranger")
    Membership.objects.create(workspace=own, user=author, role=Membership.Role.MEMBER)
    Membership.objects.create(workspace=other, user=stranger, role=Membership.Role.OWNER)
    if role is not None:
        Membership.objects.create(workspace=own, user=actor, role=role)
    return World(actor, author, stranger, own, other)


def new_conversation(workspace: Workspace, creator: User) -> Conversation:
    conversation = Conversation.objects.create(
        workspace=workspace, creator=creator, title="Tides", visibility=Conversation.Visibility.SHARED
    )
    Message.objects.create(conversation=conversation, position=0, role="user", content="Hello")
    return conversation


def new_message(workspace: Workspace, creator: User) -> Message:
    conversation = new_conversation(workspace, creator)
    return Message.objects.create(conversation=conversation, position=1, role="user", content="Again")


def new_run(workspace: Workspace, creator: User) -> Run:
    conversation = new_conversation(workspace, creator)
    return Run.objects.create(
        conversation=conversation,
        conversation_title=conversation.title,
        workspace=workspace,
        workspace_name=workspace.name,
        user=creator,
        username=creator.username,
        provider_name="Relay",
        model="gpt-test",
        status=Run.Status.COMPLETED,
        position=1,
    )


def new_provider(workspace: Workspace, creator: User) -> Provider:
    # A closed local port: a view that calls it gets its error at once, nothing leaves.
    provider = Provider(
        workspace=workspace, name="Relay", base_url="http://127.0.0.1:9/v1", created_by=creator
    )
    provider.set_api_key("sk-permissions-test-0000")
    provider.save()
    return provider


def new_preset(workspace: Workspace, creator: User) -> Preset:
    return Preset.objects.create(workspace=workspace, owner=creator, name="Terse", shared=True)


def membership_of(workspace: Workspace, creator: User) -> Membership:
    """The creator's membership (a teammate's when the actor acts on the author's)."""
    return Membership.objects.get(workspace=workspace, user=creator)


def new_invitation(workspace: Workspace, creator: User) -> Invitation:
    return Invitation.objects.create(
        workspace=workspace, token_hash=token_digest(secrets.token_urlsafe()), created_by=creator
    )


def new_share_link(workspace: Workspace, creator: User) -> ShareLink:
    return ShareLink.objects.create(
        conversation=new_conversation(workspace, creator),
        token_hash=token_digest(secrets.token_urlsafe()),
        created_by=creator,
    )


# kwarg name -> (workspace, creator) -> the object whose id fills it.
BUILDERS = {
    "conversation_id": new_conversation,
    "message_id": new_message,
    "run_id": new_run,
    "provider_id": new_provider,
    "preset_id": new_preset,
    "workspace_id": lambda workspace, creator: workspace,
    "membership_id": membership_of,
    "invitation_id": new_invitation,
    "share_link_id": new_share_link,
}


def workspace_of(obj) -> int:
    if isinstance(obj, Workspace):
        return obj.id
    if isinstance(obj, Message | ShareLink):
        return obj.conversation.workspace_id
    return obj.workspace_id


def creator_of(obj) -> int | None:
    for field in ("creator_id", "user_id", "owner_id", "created_by_id"):
        if hasattr(obj, field):
            return getattr(obj, field)
    if isinstance(obj, Message):
        return obj.conversation.creator_id
    return None


def url_kwargs(route: Route, workspace: Workspace, creator: User) -> dict:
    values = {}
    for name in route.kwargs:
        if name in TOKEN_KWARGS:
            values[name] = secrets.token_urlsafe()
            continue
        if name not in BUILDERS:
            pytest.fail(
                f"/{route.pattern}: no builder for the URL kwarg {name!r}; add one to BUILDERS in "
                "tests/test_permissions.py (name -> (workspace, creator) -> object)"
            )
        values[name] = BUILDERS[name](workspace, creator).pk
    return values


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("where", ["own", "other"])
def test_builders_make_an_object_in_the_workspace_by_its_creator(db, name, where):
    world = make_world(access.Role.VIEWER)
    workspace, creator = (world.own, world.author) if where == "own" else (world.other, world.stranger)
    obj = BUILDERS[name](workspace, creator)
    assert obj.pk is not None
    assert workspace_of(obj) == workspace.id
    if name != "workspace_id":
        assert creator_of(obj) == creator.id


def test_an_unknown_kwarg_fails_naming_the_builder_to_add(db):
    route = Route("api-widget", "api/widgets/<id:widget_id>/", None, ("widget_id",))
    world = make_world(access.Role.OWNER)
    with pytest.raises(pytest.fail.Exception, match="no builder for the URL kwarg 'widget_id'"):
        url_kwargs(route, world.own, world.author)


# ---------------------------------------------------------------------------
# What the policy expects


def others_allowed(action: str, method: str, role: str) -> bool:
    """The object rules on top of the table (access's docstring): what a role may do to
    an object a teammate created."""
    if action == "conversation.write":
        return access.allows(role, "conversation.write_any")
    if action == "preset.save":  # owners and admins may delete (or only unshare) others' presets
        return method == "DELETE" and access.is_manager(role)
    return True


def expected(route: Route, method: str, role: str | None, where: str) -> str:
    """ "allowed", "public", "login", or the status."""
    action = route.actions[method]
    if action == access.PUBLIC:
        return "public"
    if role is None:
        return "login"
    if action == access.ACCOUNT:
        return "allowed"
    objects = [k for k in route.kwargs if k not in TOKEN_KWARGS]
    if objects and where == "other":
        return 404
    if where == "private" and not access.is_manager(role):
        return 404  # a teammate's private conversation: only its creator, owners and admins see it
    if not access.allows(role, action):
        return 403
    if where in ("teammate", "private") and not others_allowed(action, method, role):
        return 403
    return "allowed"


def places(route: Route) -> tuple[str, ...]:
    """Whose object each case acts on: a teammate's (shared), a teammate's private
    conversation, the actor's own, another workspace's; "own" for a route with none."""
    objects = [k for k in route.kwargs if k not in TOKEN_KWARGS]
    if not objects:
        return ("own",)
    found = ["teammate"]
    if set(objects) & CONVERSATION_KWARGS:
        found.append("private")
    # The actor's own membership, or workspace, is not theirs as a conversation is.
    if not set(objects) & {"membership_id", "workspace_id"}:
        found.append("mine")
    return (*found, "other")


def cases():
    for route in ROUTES:
        for method in route.actions:
            for role in ROLES:
                for where in places(route):
                    label = {
                        "teammate": "own-workspace",
                        "mine": "own-workspace-mine",
                        "private": "own-workspace-private",
                    }.get(where, f"{where}-workspace")
                    yield pytest.param(route, method, role, where, id=f"{route.name} {method} {role} {label}")
            yield pytest.param(route, method, None, "own", id=f"{route.name} {method} logged-out")


def send(client: Client, method: str, url: str):
    return client.generic(method, url, data=b"", content_type="application/json")


def check(response, route: Route, want, method: str) -> None:
    status = response.status_code
    said = f"{method} {response.request['PATH_INFO']} -> {status}: {response.content[:300]!r}"
    if want == "login":
        if route.is_api:
            assert status == 401, said
        else:
            assert status == 302, said
            assert response["Location"].startswith(settings.LOGIN_URL), said
    elif want == "public":
        assert status not in (403, 405), said
        assert status < 500, said
    elif want == "allowed":
        assert status not in (401, 403, 404, 405), said
        assert status < 500, said
    else:
        assert status == want, said
        if route.is_api:
            assert response["Content-Type"] == "application/json", said
            assert response.json()["error"], said


@pytest.mark.parametrize(("route", "method", "role", "where"), list(cases()))
def test_route_answers_as_the_policy_says(db, route, method, role, where):
    world = make_world(role)
    workspace, creator = {
        "teammate": (world.own, world.author),
        "private": (world.own, world.author),
        "own": (world.own, world.author),
        "mine": (world.own, world.actor),
        "other": (world.other, world.stranger),
    }[where]
    url = reverse(route.name, kwargs=url_kwargs(route, workspace, creator))
    if where == "private":
        Conversation.objects.filter(creator=world.author).update(visibility=Conversation.Visibility.PRIVATE)
    client = Client()
    if role is not None:
        client.force_login(world.actor)
    check(send(client, method, url), route, expected(route, method, role, where), method)


def undeclared_method(route: Route) -> str | None:
    return next((m for m in ("PUT", "PATCH", "DELETE", "POST", "GET") if m not in route.actions), None)


@pytest.mark.parametrize(
    "route",
    [
        pytest.param(r, id=f"{r.name} {undeclared_method(r)} undeclared")
        for r in ROUTES
        if undeclared_method(r)
    ],
)
def test_an_undeclared_method_is_405(db, route):
    world = make_world(access.Role.OWNER)
    client = Client()
    client.force_login(world.actor)
    url = reverse(route.name, kwargs=url_kwargs(route, world.own, world.actor))
    response = send(client, undeclared_method(route), url)
    assert response.status_code == 405, (route.pattern, response.status_code)


def test_the_expectations_follow_the_policy():
    """The expected statuses are the table's, not a copy of it (so the test can fail)."""
    route = Route("api-x", "api/x/<id:conversation_id>/", None, ("conversation_id",))
    object.__setattr__(route, "view", type("V", (), {"actions": {"POST": "conversation.write"}}))
    assert expected(route, "POST", "viewer", "teammate") == 403
    assert expected(route, "POST", "member", "mine") == "allowed"
    assert expected(route, "POST", "member", "teammate") == 403  # needs conversation.write_any
    assert expected(route, "POST", "admin", "teammate") == "allowed"
    assert expected(route, "POST", "owner", "other") == 404
    assert expected(route, "POST", None, "own") == "login"
    assert expected(route, "POST", "member", "private") == 404
    assert expected(route, "POST", "admin", "private") == "allowed"
    assert places(route) == ("teammate", "private", "mine", "other")


# ---------------------------------------------------------------------------
# Websocket routes


def ws_routes():
    for entry in websocket_urlpatterns:
        consumer = getattr(entry.callback, "consumer_class", entry.callback)
        yield str(entry.pattern), consumer, tuple(entry.pattern.converters)


WS_ROUTES = list(ws_routes())


def test_every_websocket_route_declares_its_policy():
    missing = [
        f"/{pattern} ({consumer.__name__}) declares no policy action: set "
        '`actions = {"CONNECT": "<action>"}` on the consumer'
        for pattern, consumer, _ in WS_ROUTES
        if not getattr(consumer, "actions", {}).get("CONNECT")
    ]
    assert not missing, "\n".join(missing)
    assert WS_ROUTES


def ws_cases():
    for pattern, consumer, kwargs in WS_ROUTES:
        private = ("private",) if set(kwargs) & CONVERSATION_KWARGS else ()
        for role in ROLES:
            for where in ("own", *private, "other"):
                yield pytest.param(
                    pattern, consumer, kwargs, role, where, id=f"ws {pattern} {role} {where}-workspace"
                )
        yield pytest.param(pattern, consumer, kwargs, None, "own", id=f"ws {pattern} logged-out")


async def closed_with(ws, timeout: float = 5) -> int | None:
    while True:
        output = await ws.receive_output(timeout)
        if output["type"] == "websocket.close":
            return output.get("code")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("pattern", "consumer", "kwargs", "role", "where"), list(ws_cases()))
async def test_websocket_route_connects_as_the_policy_says(pattern, consumer, kwargs, role, where):
    action = consumer.actions["CONNECT"]

    def prepare():
        world = make_world(role)
        workspace, creator = (world.other, world.stranger) if where == "other" else (world.own, world.author)
        route = Route(pattern, pattern, consumer, kwargs)
        values = url_kwargs(route, workspace, creator)
        if where == "private":
            Conversation.objects.filter(creator=world.author).update(
                visibility=Conversation.Visibility.PRIVATE
            )
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), pattern)
        cookie = session_cookie(world.actor) if role is not None else "csrftoken=x"
        return path, cookie

    path, cookie = await sync_to_async(prepare)()
    ws = WebsocketCommunicator(application, path, headers=headers(cookie))
    connected, _ = await ws.connect(timeout=5)
    if role is None:
        want = 4401
    elif where == "other" or (where == "private" and not access.is_manager(role)):
        want = 4403  # as a 404: not theirs to see
    elif not access.allows(role, action):
        want = 4403
    else:
        want = None
    if want is None:
        assert connected
        output = await ws.receive_output(5)  # the consumer's "sync" event, not a close
        assert output["type"] == "websocket.send", output
        await ws.disconnect()
    else:
        assert await closed_with(ws) == want
