"""(skeleton: filled in by the presets work)"""

urlpatterns: list = []
