"""Stock engine: key layout, script registry, the Redis adapter and the sweeper."""
