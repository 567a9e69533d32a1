"""Render stage: the Markdown digest and the job that writes it from the store."""
