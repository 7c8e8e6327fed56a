"""(skeleton: filled in by the history work)"""

urlpatterns: list = []
