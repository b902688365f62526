"""Screenshots: one row per capture (the picture is a file), and what the screen shows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql')
UTC = core.models.UTCDateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('screenshots',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('client_uuid', sa.String(length=36), nullable=False),
    sa.Column('captured_at', UTC, nullable=False),
    sa.Column('received_at', UTC, nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('format', sa.String(length=8), nullable=False),
    sa.Column('bytes', sa.Integer(), nullable=False),
    sa.Column('thumb_bytes', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('black', sa.Boolean(), nullable=False),
    sa.Column('file', sa.String(length=128), nullable=False),
    sa.CheckConstraint("type IN ('periodic', 'event_start', 'event_stop')",
                       name=op.f('ck_screenshots_type')),
    sa.ForeignKeyConstraint(['client_uuid'], ['clients.uuid'],
                            name=op.f('fk_screenshots_client_uuid_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_screenshots'))
    )
    op.create_index('ix_screenshots_client_uuid_id', 'screenshots', ['client_uuid', 'id'])
    op.create_index(op.f('ix_screenshots_received_at'), 'screenshots', ['received_at'])
    with op.batch_alter_table('clients') as batch:
        batch.add_column(sa.Column('runtime', JSON, nullable=True))
        batch.add_column(sa.Column('runtime_at', UTC, nullable=True))
        batch.add_column(sa.Column('screen_black_since', UTC, nullable=True))
        batch.add_column(sa.Column('screen_fingerprint', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('screen_fingerprint_since', UTC, nullable=True))
        batch.add_column(sa.Column('screen_frozen_reported', sa.Boolean(),
                                   server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('clients') as batch:
        for name in ('screen_frozen_reported', 'screen_fingerprint_since', 'screen_fingerprint',
                     'screen_black_since', 'runtime_at', 'runtime'):
            batch.drop_column(name)
    op.drop_index(op.f('ix_screenshots_received_at'), table_name='screenshots')
    op.drop_index('ix_screenshots_client_uuid_id', table_name='screenshots')
    op.drop_table('screenshots')
