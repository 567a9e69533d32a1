"""Faces: how people reach the service (chat commands, Telegram, Slack, email pages, web server)."""
