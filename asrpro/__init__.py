"""The command line and what it runs: the supervisor, the embedded nats-server, JetStream bootstrap, images."""
