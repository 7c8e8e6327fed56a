from django import forms
from django.contrib import admin
from django.db.models import Count, Sum

from playground.logins import ThrottledAdminAuthenticationForm
from playground.models import (
    AuditEvent,
    Conversation,
    Membership,
    Message,
    Preset,
    Provider,
    Run,
    Workspace,
)

# Failed admin logins count and lock like the site's own (playground/logins.py).
admin.site.login_form = ThrottledAdminAuthenticationForm


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["workspace", "role"]


class ProviderForm(forms.ModelForm):
    # Write-only: the stored key is never rendered back, not even to admins.
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current key.",
    )

    class Meta:
        model = Provider
        fields = [
            "workspace",
            "name",
            "base_url",
            "api_key",
            "extra_headers",
            "enabled",
            "prices",
            "capabilities",
        ]

    def clean(self):
        # A key is only sent to the base URL it was saved with (README): moving the
        # provider elsewhere takes the key again.
        cleaned = super().clean()
        moved = self.instance.pk and "base_url" in self.changed_data and self.instance.api_key_encrypted
        if moved and not cleaned.get("api_key"):
            self.add_error("api_key", "Enter the key again: a changed base URL does not keep the stored key.")
        return cleaned

    def save(self, commit=True):
        provider = super().save(commit=False)
        if self.cleaned_data.get("api_key"):
            provider.set_api_key(self.cleaned_data["api_key"])
        if commit:
            provider.save()
        return provider


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "workspace", "base_url", "key_hint", "enabled", "is_demo"]
    list_filter = ["workspace", "enabled"]
    readonly_fields = ["key_hint", "is_demo"]


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ["position", "role", "content", "run", "choice_index", "in_history"]
    readonly_fields = ["run"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "position", "role", "choice_index", "in_history", "run"]
    list_filter = ["role", "conversation__workspace"]
    search_fields = ["content", "reasoning", "conversation__title"]
    list_select_related = ["conversation"]
    raw_id_fields = ["conversation", "run"]


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["title", "workspace", "creator", "updated_at"]
    list_filter = ["workspace"]
    search_fields = ["title"]
    inlines = [MessageInline]


REQUEST_STORED_AS = {"request_template", "request_messages_at", "request_texts"}


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    """The usage ledger: filter by user, model, provider, status and day; totals below."""

    list_display = [
        "id",
        "submitted_at",
        "username",
        "workspace_name",
        "provider_name",
        "model",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "usage_estimated",
        "cost_usd",
        "ttft",
        "duration",
    ]
    list_filter = [
        "status",
        "usage_estimated",
        "workspace_name",
        "provider_name",
        "model",
        "username",
        "submitted_at",
    ]
    date_hierarchy = "submitted_at"
    search_fields = ["model", "provider_name", "username", "conversation_title", "error_message"]
    # The body as sent, rebuilt, in place of the parts it is stored as.
    readonly_fields = [
        *(f.name for f in Run._meta.fields if f.name not in REQUEST_STORED_AS),
        "request_text",
    ]
    change_list_template = "admin/playground/run/change_list.html"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the ledger: no delete, one by one or in bulk

    @admin.display(description="TTFT ms")
    def ttft(self, run):
        return run.timing()["ttft_ms"]

    @admin.display(description="total ms")
    def duration(self, run):
        return run.timing()["total_ms"]

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        try:
            queryset = response.context_data["cl"].queryset
        except (AttributeError, KeyError):
            return response
        totals = Sum("prompt_tokens"), Sum("completion_tokens"), Sum("total_tokens"), Sum("cost_usd")
        rows = (
            queryset.order_by()
            .values("user__username", "provider_name", "model")
            .annotate(
                runs=Count("id"), prompt=totals[0], completion=totals[1], total=totals[2], cost=totals[3]
            )
            .order_by("-total")
        )
        response.context_data["usage_summary"] = list(rows[:100])
        return response


@admin.register(Preset)
class PresetAdmin(admin.ModelAdmin):
    list_display = ("name", "workspace", "owner", "shared", "model", "updated_at")
    list_filter = ("workspace", "shared")
    search_fields = ("name", "model")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit log, for staff, read-only: no add, change or delete, one by one or in bulk."""

    list_display = [
        "created_at",
        "actor_name",
        "action",
        "workspace_name",
        "target_type",
        "target_name",
        "ip",
    ]
    list_filter = ["action", "workspace_name", "created_at"]
    date_hierarchy = "created_at"
    search_fields = ["actor_name", "action", "target_name", "workspace_name", "ip"]
    readonly_fields = [f.name for f in AuditEvent._meta.fields]
    actions = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
