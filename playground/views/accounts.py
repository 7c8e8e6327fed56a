"""The user's account: its page, password change (Django's PasswordChangeView) and password
reset by email (Django's PasswordResetView family, sent with the EMAIL_* settings)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy

from playground.access import ACCOUNT, PUBLIC, declare, page
from playground.models import Membership


class EmailForm(forms.Form):
    email = forms.EmailField(label="Email", required=False)


@page(ACCOUNT, methods=("GET", "POST"))
def account(request: HttpRequest) -> HttpResponse:
    """The user's workspaces, their email address (where password resets go) and
    "Change password"."""
    form = EmailForm(request.POST or None, initial={"email": request.user.email})
    if request.method == "POST" and form.is_valid():
        request.user.email = form.cleaned_data["email"]
        request.user.save(update_fields=["email"])
        messages.success(request, "Email saved.")
        return redirect("account")
    memberships = (
        Membership.objects.filter(user=request.user).select_related("workspace").order_by("workspace__name")
    )
    status = 400 if form.is_bound else 200
    return render(
        request, "playground/account.html", {"memberships": memberships, "form": form}, status=status
    )


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
