"""Kafka connectors: the batch source, the exactly-once sink, topic helpers and the typed connection settings."""
