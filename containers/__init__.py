"""Everything that runs inside a model container: the model server and its engines."""
