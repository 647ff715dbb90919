"""The tables of the SQL store (ridesync/migrations/ makes them). A fare's
and a trip's whole value is kept as JSON in `data`; the columns beside it
are what statements select and compare on."""
from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, Text

metadata = MetaData()
ID = String(64)
USER = String(128)

fares = Table(
    "fares", metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", USER, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used", Boolean, nullable=False),
    Column("data", Text, nullable=False),
)

trips = Table(
    "trips", metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", USER, nullable=False),
    Column("status", String(32), nullable=False),
    Column("driver_id", USER),
    Column("version", Integer, nullable=False),  # +1 at every change: the compare of compare-and-set
    Column("data", Text, nullable=False),
)

current_trips = Table(  # the latest trip each user rides, drives or was offered
    "current_trips", metadata,
    Column("user_id", USER, primary_key=True),
    Column("trip_id", ID, nullable=False),
)

handled_messages = Table(
    "handled_messages", metadata,
    Column("consumer", String(64), primary_key=True),
    Column("message_id", String(128), primary_key=True),
    Column("handled_at", Float, nullable=False),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sender", String(32), nullable=False),  # the service whose relay publishes it
    Column("routing_key", String(64), nullable=False),
    Column("owner_id", USER, nullable=False),
    Column("data", Text, nullable=False),
    Column("headers", Text, nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("notify", Boolean, nullable=False),  # dropped, not an error, when no one listens
    Column("not_before", Float),  # unix time: until then the sender publishes it itself, not the relay
)

payment_sessions = Table(
    "payment_sessions", metadata,
    Column("trip_id", ID, primary_key=True),
    Column("id", String(128), nullable=False),
    Column("user_id", USER, nullable=False),
    Column("amount", Integer, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("voided", Boolean, nullable=False),
)
