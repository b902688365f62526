"""Client commands, their history and the lockout rows; the scheduler's columns on clients.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 08:03:40.511885
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sqlalchemy.dialects import postgresql

import core.models

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('client_commands',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('client_uuid', sa.String(length=36), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.Column('forced', sa.Boolean(), nullable=False),
    sa.Column('issued_at', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('completion_seconds', sa.Integer(), nullable=False),
    sa.Column('completion_due_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_dispatch_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('sent_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('accepted_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('execution_started_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completed_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failed_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.CheckConstraint("action IN ('reboot_host', 'shutdown_host', 'restart_app')", name=op.f('ck_client_commands_action')),
    sa.CheckConstraint("state IN ('queued', 'sent', 'accepted', 'execution_started', 'completed', 'failed', 'expired', 'timed_out', 'cancelled')", name=op.f('ck_client_commands_state')),
    sa.ForeignKeyConstraint(['client_uuid'], ['clients.uuid'], name=op.f('fk_client_commands_client_uuid_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_client_commands'))
    )
    with op.batch_alter_table('client_commands', schema=None) as batch_op:
        batch_op.create_index('ix_client_commands_client_uuid_issued_at', ['client_uuid', 'issued_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_client_commands_finished_at'), ['finished_at'], unique=False)
        batch_op.create_index('ix_client_commands_open', ['state', 'expires_at'], unique=False, postgresql_where=sa.text("state IN ('queued', 'sent', 'accepted', 'execution_started')"), sqlite_where=sa.text("state IN ('queued', 'sent', 'accepted', 'execution_started')"))
        batch_op.create_index('ix_client_commands_requested_by_issued_at', ['requested_by', 'issued_at'], unique=False)

    op.create_table('command_locks',
    sa.Column('client_uuid', sa.String(length=36), nullable=False),
    sa.Column('command_id', sa.String(length=36), nullable=False),
    sa.Column('issued_at', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_uuid'], ['clients.uuid'], name=op.f('fk_command_locks_client_uuid_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('client_uuid', name=op.f('pk_command_locks'))
    )
    op.create_table('client_command_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('command_id', sa.String(length=36), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('at', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.ForeignKeyConstraint(['command_id'], ['client_commands.id'], name=op.f('fk_client_command_history_command_id_client_commands'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_client_command_history'))
    )
    with op.batch_alter_table('client_command_history', schema=None) as batch_op:
        batch_op.create_index('ix_client_command_history_command_id_id', ['command_id', 'id'], unique=False)

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('liveness', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('liveness_changed_at', core.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('crash_reported_at', core.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('monitor_signature', sa.Text(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('monitor_signature')
        batch_op.drop_column('crash_reported_at')
        batch_op.drop_column('liveness_changed_at')
        batch_op.drop_column('liveness')

    with op.batch_alter_table('client_command_history', schema=None) as batch_op:
        batch_op.drop_index('ix_client_command_history_command_id_id')

    op.drop_table('client_command_history')
    op.drop_table('command_locks')
    with op.batch_alter_table('client_commands', schema=None) as batch_op:
        batch_op.drop_index('ix_client_commands_requested_by_issued_at')
        batch_op.drop_index('ix_client_commands_open', postgresql_where=sa.text("state IN ('queued', 'sent', 'accepted', 'execution_started')"), sqlite_where=sa.text("state IN ('queued', 'sent', 'accepted', 'execution_started')"))
        batch_op.drop_index(batch_op.f('ix_client_commands_finished_at'))
        batch_op.drop_index('ix_client_commands_client_uuid_issued_at')

    op.drop_table('client_commands')
