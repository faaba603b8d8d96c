"""The Telegram channel (python-telegram-bot): updates in, messages and files out."""
