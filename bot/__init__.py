"""Channel adapters and entry points (console now; Telegram builds on the same app)."""
