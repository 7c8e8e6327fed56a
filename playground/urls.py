from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from playground import compare, demo, history, logins, presets, turns, views

urlpatterns = [
    path("", views.index, name="index"),
    path("c/<id:conversation_id>/", views.index, name="conversation"),
    path("compare/", compare.page, name="compare"),
    path("api/conversations/", views.conversations, name="api-conversations"),
    path("api/import/", views.import_request, name="api-import"),
    path("api/conversations/<id:conversation_id>/", views.conversation, name="api-conversation"),
    path("api/conversations/<id:conversation_id>/runs/", views.submit_run, name="api-submit"),
    path("api/conversations/<id:conversation_id>/messages/", turns.add_message, name="api-add-message"),
    path("api/conversations/<id:conversation_id>/fork/", turns.fork_conversation, name="api-fork"),
    path("api/messages/<id:message_id>/", turns.message_detail, name="api-message"),
    path("api/messages/<id:message_id>/move/", turns.move_message, name="api-move-message"),
    path("api/messages/<id:message_id>/choose/", turns.choose_message, name="api-choose"),
    path("api/runs/<id:run_id>/", views.run_detail, name="api-run"),
    path("api/runs/<id:run_id>/hide/", turns.delete_run, name="api-hide-run"),
    path("api/runs/<id:run_id>/stop/", views.stop_run, name="api-stop"),
    path("api/providers/<id:provider_id>/probe/", views.probe_provider, name="api-probe"),
    path("api/providers/<id:provider_id>/profile/", views.provider_profile, name="api-profile"),
    path("api/providers/<id:provider_id>/models/", views.provider_models, name="api-models"),
    path("", include(presets)),
    path("", include(history)),
    path("demo/v1/chat/completions", demo.chat_completions, name="demo-chat"),
    path("demo/v1/models", demo.models, name="demo-models"),
    path("accounts/login/", logins.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/login/", logins.admin_login(admin.site)),
    path("admin/", admin.site.urls),
]
