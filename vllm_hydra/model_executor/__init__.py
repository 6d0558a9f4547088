"""The model side of a worker: layers, model classes, and the weight loader."""
