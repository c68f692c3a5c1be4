"""The trainer: snapshot → temporal split → four model families → offline evaluation → registry."""
