"""Online scoring API (hot model swap, reason codes) and the monitoring dashboard.

Modules: `app` (the FastAPI factory), `holder` (the served model and its hot swap), `schema`
(request schema from the model's feature spec), `auth`, `metrics`, `middleware`, `recorder`
(served predictions to the prediction store), `dashboard` (what the pages show), `settings`.
Nothing is imported here, so reading `settings` does not load the web stack.
"""
