"""pijobs' own shared package: models, states, settings, AWS adapters and logging."""
