"""Alembic's environment: migrations run on the connection (and inside the
transaction) that ridesync.database.migrate hands over."""
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
