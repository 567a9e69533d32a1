"""Fetch stage: the arXiv search client, Atom parsing, the request gate, keyword queries."""
