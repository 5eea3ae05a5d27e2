"""Fakes of the outside world (processors, ...) for tests: real protocols, no network."""
