"""Alembic environment: Keel passes an open connection in `config.attributes`."""

from alembic import context
from keel import store  # noqa: F401  (registers the prediction-store tables)
from keel.registry.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
