"""Client activity: live messages and heartbeats per client and 5-minute bucket.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 09:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('client_activity',
    sa.Column('client_uuid', sa.String(length=36), nullable=False),
    sa.Column('bucket_start', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('heartbeats', sa.Integer(), nullable=False),
    sa.Column('messages', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['client_uuid'], ['clients.uuid'], name=op.f('fk_client_activity_client_uuid_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('client_uuid', 'bucket_start', name=op.f('pk_client_activity'))
    )
    with op.batch_alter_table('client_activity', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_client_activity_bucket_start'), ['bucket_start'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('client_activity', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_client_activity_bucket_start'))

    op.drop_table('client_activity')
