from django.urls import path

from playground.consumers import ConversationConsumer, WorkspaceConsumer

websocket_urlpatterns = [
    path("ws/conversations/<int:conversation_id>/", ConversationConsumer.as_asgi()),
    path("ws/workspaces/<int:workspace_id>/", WorkspaceConsumer.as_asgi()),
]
