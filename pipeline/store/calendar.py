"""The publishing calendar: approval order, slots, and the articles whose slot has come."""

from __future__ import annotations

from pipeline.store.base import StoreBase


class CalendarStore(StoreBase):
    """Slots of approved articles and what is due for publishing."""
