"""usage: the previous completion's inferred acceptance

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 12:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prev_shown_chars", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("prev_accepted_chars", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_column("prev_accepted_chars")
        batch_op.drop_column("prev_shown_chars")
