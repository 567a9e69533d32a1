"""Poll stage: one keyword's poll (the diff) and the cycle over all keywords."""
