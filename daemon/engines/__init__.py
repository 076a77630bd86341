"""TensorRT engines: build options and profiles, fingerprints, the on-disk cache."""
