"""Notifications: channels (Apprise URLs, encrypted), rules, the notification log, and the
events' own notification cursor.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql')
UTC = core.models.UTCDateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('notification_channels',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('url_encrypted', sa.Text(), nullable=False),
    sa.Column('url_redacted', sa.String(length=255), nullable=False),
    sa.Column('url_digest', sa.String(length=64), nullable=False),
    sa.Column('tags', JSON, nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('created_at', UTC, nullable=False),
    sa.Column('updated_at', UTC, nullable=False),
    sa.CheckConstraint("source IN ('env', 'admin')", name=op.f('ck_notification_channels_source')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_channels')),
    sa.UniqueConstraint('name', name=op.f('uq_notification_channels_name'))
    )
    op.create_index(op.f('ix_notification_channels_url_digest'), 'notification_channels',
                    ['url_digest'])
    op.create_table('notification_rules',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('event_types', JSON, nullable=False),
    sa.Column('min_severity', sa.String(length=16), nullable=False),
    sa.Column('channel_ids', JSON, nullable=False),
    sa.Column('group_id', sa.Integer(), nullable=True),
    sa.Column('created_at', UTC, nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'],
                            name=op.f('fk_notification_rules_group_id_groups'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_rules'))
    )
    op.create_table('notifications',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('channel_id', sa.Integer(), nullable=True),
    sa.Column('channel_shown', sa.String(length=255), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=True),
    sa.Column('client_uuid', sa.String(length=36), nullable=True),
    sa.Column('event_type', sa.String(length=48), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.Column('folded_into', sa.BigInteger(), nullable=True),
    sa.Column('created_at', UTC, nullable=False),
    sa.Column('next_attempt_at', UTC, nullable=True),
    sa.Column('sent_at', UTC, nullable=True),
    sa.ForeignKeyConstraint(['channel_id'], ['notification_channels.id'],
                            name=op.f('fk_notifications_channel_id_notification_channels'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications'))
    )
    op.create_index('ix_notifications_channel_state', 'notifications', ['channel_id', 'state'])
    op.create_index('ix_notifications_client_type', 'notifications', ['client_uuid', 'event_type'])
    op.create_index(op.f('ix_notifications_created_at'), 'notifications', ['created_at'])
    op.create_index(op.f('ix_notifications_state'), 'notifications', ['state'])
    with op.batch_alter_table('events') as batch:
        batch.add_column(sa.Column('notified_at', UTC, nullable=True))
        batch.create_index(batch.f('ix_events_notified_at'), ['notified_at'])
    # What happened before notifications existed is history, not news.
    op.execute("UPDATE events SET notified_at = occurred_at")


def downgrade() -> None:
    with op.batch_alter_table('events') as batch:
        batch.drop_index(batch.f('ix_events_notified_at'))
        batch.drop_column('notified_at')
    op.drop_table('notifications')
    op.drop_table('notification_rules')
    op.drop_index(op.f('ix_notification_channels_url_digest'), table_name='notification_channels')
    op.drop_table('notification_channels')
