"""What runs a model: the registry, the background loader, executors and instances, the engine
swap and its accuracy gate, per-model statistics."""
