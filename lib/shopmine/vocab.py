"""The shared vocabulary of the pipeline, defined once: event types, the purchase funnel, and what a line is worth."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

# every canonical event type; each source adapter (shopmine.io.sources) maps its own vocabulary onto these
EVENT_TYPES = ("view", "search", "favourite", "cart", "remove_from_cart", "purchase", "review")

# the purchase funnel in order; a session's or user's furthest step is one of these, or "none" before the first
FUNNEL = ("view", "favourite", "cart", "purchase")


def units() -> Column:
    """Units of a line: its quantity, 1 where the source gives none (Taobao, RetailRocket, REES46 lines are single)."""
    return F.coalesce(F.col("quantity"), F.lit(1))


def revenue() -> Column:
    """The money of a line: price × units (null where the price is unknown; callers decide what a purchase is)."""
    return F.col("price") * units()
