"""MQTT publisher of domain events (a ``Notifier``)."""

from ctiserver.mqtt.publisher import MqttNotifier, topic_for

__all__ = ["MqttNotifier", "topic_for"]
