"""The actor framework: actors (entrypoints marked on methods), bus plumbing, configuration, logs, processes."""
