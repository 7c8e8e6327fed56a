"""The user's account: its page, password change (Django's PasswordChangeView) and password
reset by email (Django's PasswordResetView family, sent with the EMAIL_* settings)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse_lazy

from playground.access import ACCOUNT, PUBLIC, declare, page
from playground.models import Membership


@page(ACCOUNT)
def account(request: HttpRequest) -> HttpResponse:
    memberships = (
        Membership.objects.filter(user=request.user).select_related("workspace").order_by("workspace__name")
    )
    return render(request, "playground/account.html", {"memberships": memberships})


password_change = page(ACCOUNT, methods=("GET", "POST"))(
    auth_views.PasswordChangeView.as_view(success_url=reverse_lazy("password_change_done"))
)
password_change_done = page(ACCOUNT)(auth_views.PasswordChangeDoneView.as_view())
password_reset = declare(
    auth_views.PasswordResetView.as_view(success_url=reverse_lazy("password_reset_done")),
    {"GET": PUBLIC, "POST": PUBLIC},
)
password_reset_done = declare(auth_views.PasswordResetDoneView.as_view(), {"GET": PUBLIC})
password_reset_confirm = declare(
    auth_views.PasswordResetConfirmView.as_view(success_url=reverse_lazy("password_reset_complete")),
    {"GET": PUBLIC, "POST": PUBLIC},
)
password_reset_complete = declare(auth_views.PasswordResetCompleteView.as_view(), {"GET": PUBLIC})
