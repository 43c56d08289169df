"""superseded notices give up their dedupe keys

Rows superseded before this version kept their keys, which still block the same
notice when its state comes back (a revived registration's reminder, a session
moved back to its first time). They get the suffix that eventsvc.outbox.models.
superseded_key() gives every newly superseded row.

Revision ID: 5b7d2e9c41f0
Revises: bd04e1a0d9a6
Create Date: 2026-11-23 20:20:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '5b7d2e9c41f0'
down_revision = 'bd04e1a0d9a6'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("UPDATE messages SET dedupe_key = dedupe_key || ':superseded:' || CAST(id AS VARCHAR) "
               "WHERE status = 'superseded' AND dedupe_key NOT LIKE '%:superseded:%'")


def downgrade():
    # Nothing to undo: the suffixed keys are valid under the previous version too, and
    # stripping them could clash with a newer notice that now holds the original key.
    pass
