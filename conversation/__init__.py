"""Channel-agnostic chat logic: the sans-IO core, the Redis store, the runner, the watcher."""
