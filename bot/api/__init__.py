"""The agents' HTTP API: submissions through the same pipeline as the chat channels."""
