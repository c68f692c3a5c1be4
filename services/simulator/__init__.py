"""The movie-streaming world: catalog, users, a hidden taste model, the stream and the APIs."""
