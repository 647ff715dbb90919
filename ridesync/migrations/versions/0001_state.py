"""Fares, trips, users' current trips, handled messages, the outbox and payment sessions."""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

ID = sa.String(64)
USER = sa.String(128)


def upgrade():
    op.create_table(
        "fares",
        sa.Column("id", ID, primary_key=True),
        sa.Column("user_id", USER, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used", sa.Boolean, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("fares_expires_at", "fares", ["expires_at"])
    op.create_table(
        "trips",
        sa.Column("id", ID, primary_key=True),
        sa.Column("user_id", USER, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("driver_id", USER),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_table(
        "current_trips",
        sa.Column("user_id", USER, primary_key=True),
        sa.Column("trip_id", ID, nullable=False),
    )
    op.create_table(
        "handled_messages",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("message_id", sa.String(128), primary_key=True),
        sa.Column("handled_at", sa.Float, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sender", sa.String(32), nullable=False),
        sa.Column("routing_key", sa.String(64), nullable=False),
        sa.Column("owner_id", USER, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("notify", sa.Boolean, nullable=False),
    )
    op.create_index("outbox_sender", "outbox", ["sender", "id"])
    op.create_table(
        "payment_sessions",
        sa.Column("trip_id", ID, primary_key=True),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("user_id", USER, nullable=False),
        sa.Column("amount", sa.Integer, nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("voided", sa.Boolean, nullable=False),
    )
