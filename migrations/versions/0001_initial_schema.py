"""Initial schema: clients, client logs, fleet events, ingest rejection counters.

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 05:41:27.871640
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import core.models

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('clients',
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=True),
    sa.Column('ip', sa.String(length=45), nullable=True),
    sa.Column('software_version', sa.String(length=64), nullable=True),
    sa.Column('hardware', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.Column('group_id', sa.String(length=64), nullable=True),
    sa.Column('first_seen_at', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_heartbeat_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_discovery_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('process_status', sa.String(length=16), nullable=True),
    sa.Column('process_status_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('health', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.Column('health_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('mqtt_reconnect_count', sa.BigInteger(), nullable=True),
    sa.Column('mqtt_last_disconnect_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('presence', sa.String(length=8), nullable=True),
    sa.Column('presence_session', sa.BigInteger(), nullable=True),
    sa.Column('presence_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('service_failed_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('service_failed_unit', sa.String(length=255), nullable=True),
    sa.Column('service_failed_exit_code', sa.Integer(), nullable=True),
    sa.Column('service_failed_message', sa.Text(), nullable=True),
    sa.Column('service_failed_received_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('service_failed_acknowledged_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('service_failed_acknowledged_by', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('uuid', name=op.f('pk_clients'))
    )
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clients_group_id'), ['group_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_clients_last_seen_at'), ['last_seen_at'], unique=False)

    op.create_table('ingest_rejections',
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('first_at', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_at', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_topic', sa.String(length=255), nullable=False),
    sa.Column('last_detail', sa.String(length=300), nullable=False),
    sa.PrimaryKeyConstraint('reason', name=op.f('pk_ingest_rejections'))
    )
    op.create_table('client_logs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('client_uuid', sa.String(length=36), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('logged_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('received_at', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('context', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.ForeignKeyConstraint(['client_uuid'], ['clients.uuid'], name=op.f('fk_client_logs_client_uuid_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_client_logs'))
    )
    with op.batch_alter_table('client_logs', schema=None) as batch_op:
        batch_op.create_index('ix_client_logs_client_uuid_id', ['client_uuid', 'id'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('type', sa.String(length=48), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('client_uuid', sa.String(length=36), nullable=True),
    sa.Column('occurred_at', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.Column('delivered_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['client_uuid'], ['clients.uuid'], name=op.f('fk_events_client_uuid_clients'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_client_uuid_occurred_at', ['client_uuid', 'occurred_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_delivered_at'), ['delivered_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_occurred_at'), ['occurred_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_occurred_at'))
        batch_op.drop_index(batch_op.f('ix_events_delivered_at'))
        batch_op.drop_index('ix_events_client_uuid_occurred_at')

    op.drop_table('events')
    with op.batch_alter_table('client_logs', schema=None) as batch_op:
        batch_op.drop_index('ix_client_logs_client_uuid_id')

    op.drop_table('client_logs')
    op.drop_table('ingest_rejections')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clients_last_seen_at'))
        batch_op.drop_index(batch_op.f('ix_clients_group_id'))

    op.drop_table('clients')
