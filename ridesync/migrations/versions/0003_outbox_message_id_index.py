"""An index on outbox.message_id: a row is inserted without asking for its
id (no answer to wait for in CreateTrip's pipelined transaction) and deleted
by its message_id once published."""
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade():
    op.create_index("outbox_message_id", "outbox", ["message_id"])
