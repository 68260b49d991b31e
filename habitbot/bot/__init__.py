"""The polling bot: `python -m habitbot.bot`."""
