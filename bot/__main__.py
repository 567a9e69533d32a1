"""`python -m bot` is the `daily-papers` command."""

from bot.cli import main

main()
