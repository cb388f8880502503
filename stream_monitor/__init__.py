"""stream-monitor: a Kafka-native streaming drift detector and retrain trigger for ML models."""

__version__ = "0.1.0"
