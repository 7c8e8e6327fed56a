"""Login throttling, in the cache (shared by every process when REDIS_URL is set).

Every failed login (Django's `user_login_failed` signal) counts against its username and
its client address, each in a window of PLAYGROUND_LOGIN_LOCKOUT_SECONDS from its first
failure. A username with PLAYGROUND_LOGIN_FAILURES_PER_USER failures, or an address with
PLAYGROUND_LOGIN_FAILURES_PER_ADDRESS, is locked for PLAYGROUND_LOGIN_LOCKOUT_SECONDS: its
logins, right password or not, are refused with 429 before any password is checked. A
successful login clears its username's count."""

from __future__ import annotations

import hashlib
import math
import time

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.dispatch import receiver


def subjects(request, username: str | None) -> list[tuple[str, int]]:
    """(cache key suffix, failures allowed) for the username and the client address."""
    found = []
    if username:
        digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()
        found.append((f"user:{digest}", settings.LOGIN_FAILURES_PER_USER))
    address = request.META.get("REMOTE_ADDR") if request is not None else None
    if address:
        found.append((f"address:{address}", settings.LOGIN_FAILURES_PER_ADDRESS))
    return found


def locked_for(request, username: str | None) -> int:
    """Seconds until this username and address may try again; 0 when not locked."""
    now = time.time()
    until = [cache.get(f"login-locked:{key}") or 0 for key, _ in subjects(request, username)]
    return max(0, math.ceil(max(until, default=0) - now))


def refusal(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"Too many failed logins. Try again in {minutes} minute{'s' if minutes != 1 else ''}."


@receiver(user_login_failed)
def count_failure(sender, credentials: dict, request=None, **kwargs) -> None:
    """Count the failure; the audit log records it ("login.failed": the username tried and
    the address, never the password) and, when it locks a username or an address,
    "login.locked_out"."""
    from playground import audit

    window = settings.LOGIN_LOCKOUT_SECONDS
    username = str(credentials.get("username") or "")[:150]
    audit.record("login.failed", request=request, actor=None, username=username)
    for key, allowed in subjects(request, credentials.get("username")):
        cache.add(f"login-failures:{key}", 0, timeout=window)
        try:
            failures = cache.incr(f"login-failures:{key}")
        except ValueError:  # expired between add and incr
            cache.set(f"login-failures:{key}", failures := 1, timeout=window)
        if failures >= allowed:
            cache.set(f"login-locked:{key}", time.time() + window, timeout=window)
        if failures == allowed:
            locked = "username" if key.startswith("user:") else "address"
            audit.record(
                "login.locked_out",
                request=request,
                actor=None,
                username=username,
                locked=locked,
                failures=failures,
                seconds=window,
            )


@receiver(user_logged_in)
def clear_failures(sender, request, user, **kwargs) -> None:
    for key, _ in subjects(request, user.get_username())[:1]:
        cache.delete(f"login-failures:{key}")


class ThrottledMixin:
    """An AuthenticationForm that refuses a locked username or address before authenticating."""

    throttled = False

    def clean(self):
        seconds = locked_for(self.request, self.data.get("username"))
        if seconds:
            self.throttled = True
            raise ValidationError(refusal(seconds), code="throttled")
        return super().clean()


class ThrottledAuthenticationForm(ThrottledMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledMixin, AdminAuthenticationForm):
    pass


class LoginView(auth_views.LoginView):
    """Django's LoginView with the throttle: a refused attempt answers 429."""

    authentication_form = ThrottledAuthenticationForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.throttled:
            response.status_code = 429
        return response


def admin_login(site):
    """The admin site's login view with the throttle (its login_form is set to the throttled
    form by `install`): a refused attempt answers 429."""

    def view(request, *args, **kwargs):
        response = site.login(request, *args, **kwargs)
        form = getattr(response, "context_data", None) and response.context_data.get("form")
        if getattr(form, "throttled", False):
            response.status_code = 429
        return response

    return view
