"""Deliver stage: the dispatcher and the delivery clock (when rows become due)."""
