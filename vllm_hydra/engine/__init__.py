"""Engine construction: the engine core, its clients, and the frontend's processors."""
