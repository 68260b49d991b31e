"""Declarative base with a constraint naming convention (stable names for migrations)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Enum, MetaData, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utc_now_column(onupdate: bool = False) -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(),
        onupdate=func.now() if onupdate else None,
    )


def str_enum(*values: str, name: str, length: int = 32) -> Enum:
    """An enum stored as VARCHAR with a CHECK constraint (no PostgreSQL enum type to migrate)."""
    return Enum(*values, name=name, native_enum=False, create_constraint=True, length=length,
                validate_strings=True)
