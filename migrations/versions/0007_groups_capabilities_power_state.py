"""Groups staff manage, client capabilities, TV power state, group commands, longer ack codes.

The group a device reported in discovery moves to `reported_group_id`; `group_id` is now the
group staff assigned (an integer, as the deployed clients read it from their retained topic).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 02:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql')
UTC = core.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table('groups',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('supported_actions', JSON, nullable=True),
    sa.Column('created_at', UTC, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_groups')),
    sa.UniqueConstraint('name', name=op.f('uq_groups_name'))
    )
    with op.batch_alter_table('clients') as batch:
        batch.add_column(sa.Column('reported_group_id', sa.String(length=64), nullable=True))
    op.execute('UPDATE clients SET reported_group_id = group_id')
    with op.batch_alter_table('clients') as batch:
        batch.drop_index('ix_clients_group_id')
        batch.drop_column('group_id')
    with op.batch_alter_table('clients') as batch:
        batch.add_column(sa.Column('group_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('group_pending', sa.Boolean(), server_default=sa.false(),
                                   nullable=False))
        batch.add_column(sa.Column('group_dispatch_at', UTC, nullable=True))
        batch.add_column(sa.Column('supported_actions', JSON, nullable=True))
        batch.add_column(sa.Column('reported_capabilities', JSON, nullable=True))
        batch.add_column(sa.Column('unsupported_actions', JSON, nullable=True))
        batch.add_column(sa.Column('power_state', JSON, nullable=True))
        batch.add_column(sa.Column('power_state_at', UTC, nullable=True))
        batch.create_index('ix_clients_group_id', ['group_id'])
        batch.create_foreign_key(op.f('fk_clients_group_id_groups'), 'groups', ['group_id'],
                                 ['id'], ondelete='SET NULL')
    with op.batch_alter_table('client_commands') as batch:
        batch.alter_column('error_code', existing_type=sa.String(length=64),
                           type_=sa.String(length=128))
        batch.add_column(sa.Column('group_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('held', sa.Boolean(), server_default=sa.false(),
                                   nullable=False))
        batch.create_foreign_key(op.f('fk_client_commands_group_id_groups'), 'groups',
                                 ['group_id'], ['id'], ondelete='SET NULL')
    op.create_index('ix_client_commands_held', 'client_commands', ['group_id'],
                    postgresql_where=sa.text('held'), sqlite_where=sa.text('held'))


def downgrade() -> None:
    op.drop_index('ix_client_commands_held', table_name='client_commands',
                  postgresql_where=sa.text('held'), sqlite_where=sa.text('held'))
    with op.batch_alter_table('client_commands') as batch:
        batch.drop_constraint(op.f('fk_client_commands_group_id_groups'), type_='foreignkey')
        batch.drop_column('held')
        batch.drop_column('group_id')
        batch.alter_column('error_code', existing_type=sa.String(length=128),
                           type_=sa.String(length=64))
    with op.batch_alter_table('clients') as batch:
        batch.drop_constraint(op.f('fk_clients_group_id_groups'), type_='foreignkey')
        batch.drop_index('ix_clients_group_id')
        for name in ('power_state_at', 'power_state', 'unsupported_actions',
                     'reported_capabilities', 'supported_actions', 'group_dispatch_at',
                     'group_pending', 'group_id'):
            batch.drop_column(name)
    with op.batch_alter_table('clients') as batch:
        batch.add_column(sa.Column('group_id', sa.String(length=64), nullable=True))
        batch.create_index('ix_clients_group_id', ['group_id'])
    op.execute('UPDATE clients SET group_id = reported_group_id')
    with op.batch_alter_table('clients') as batch:
        batch.drop_column('reported_group_id')
    op.drop_table('groups')
