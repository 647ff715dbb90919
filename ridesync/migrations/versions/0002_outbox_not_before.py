"""outbox.not_before: a row the relay leaves alone until then (unix time),
because its sender publishes it itself right after the commit (CreateTrip)."""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.add_column("outbox", sa.Column("not_before", sa.Float, nullable=True))
