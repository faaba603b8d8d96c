"""The Feishu / Lark channel: events by long connection or webhook, messages and cards."""
