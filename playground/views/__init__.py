"""The views, by resource: pages (the playground, Compare), conversations, runs, messages
(turns by hand), history (export and import), providers, presets. Their routes are all in
playground.urls; the JSON API's views share playground.api's decorator and
playground.access's permission policy."""
