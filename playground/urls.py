from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from playground import logins
from playground.views import conversations, demo, history, messages, pages, presets, providers, runs

urlpatterns = [
    path("", pages.index, name="index"),
    path("c/<id:conversation_id>/", pages.index, name="conversation"),
    path("compare/", pages.compare, name="compare"),
    path("api/conversations/", conversations.conversations, name="api-conversations"),
    path("api/import/", history.import_request, name="api-import"),
    path("api/conversations/<id:conversation_id>/", conversations.conversation, name="api-conversation"),
    path("api/conversations/<id:conversation_id>/runs/", runs.submit_run, name="api-submit"),
    path("api/conversations/<id:conversation_id>/messages/", messages.add_message, name="api-add-message"),
    path("api/conversations/<id:conversation_id>/fork/", messages.fork_conversation, name="api-fork"),
    path(
        "api/conversations/<id:conversation_id>/restore/",
        conversations.restore_conversation,
        name="api-restore-conversation",
    ),
    path("api/messages/<id:message_id>/", messages.message_detail, name="api-message"),
    path("api/messages/<id:message_id>/move/", messages.move_message, name="api-move-message"),
    path("api/messages/<id:message_id>/choose/", messages.choose_message, name="api-choose"),
    path("api/runs/<id:run_id>/", runs.run_detail, name="api-run"),
    path("api/runs/<id:run_id>/hide/", messages.delete_run, name="api-hide-run"),
    path("api/runs/<id:run_id>/stop/", runs.stop_run, name="api-stop"),
    path("providers/", providers.providers_page, name="providers"),
    path("api/providers/", providers.providers, name="api-providers"),
    path("api/providers/<id:provider_id>/", providers.provider_detail, name="api-provider"),
    path("api/providers/<id:provider_id>/test/", providers.test_provider, name="api-provider-test"),
    path("api/providers/<id:provider_id>/probe/", providers.probe_provider, name="api-probe"),
    path("api/providers/<id:provider_id>/profile/", providers.provider_profile, name="api-profile"),
    path("api/providers/<id:provider_id>/models/", providers.provider_models, name="api-models"),
    path("api/presets/", presets.presets, name="api-presets"),
    path("api/presets/<id:preset_id>/", presets.preset_detail, name="api-preset"),
    path("api/conversations/import/", history.import_conversation, name="api-import-conversation"),
    path("api/conversations/<id:conversation_id>/export.json", history.export_json, name="api-export-json"),
    path("api/conversations/<id:conversation_id>/export.md", history.export_markdown, name="api-export-md"),
    path("demo/v1/chat/completions", demo.chat_completions, name="demo-chat"),
    path("demo/v1/models", demo.models, name="demo-models"),
    path("accounts/login/", logins.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/login/", logins.admin_login(admin.site)),
    path("admin/", admin.site.urls),
]

handler500 = "playground.views.errors.server_error"
