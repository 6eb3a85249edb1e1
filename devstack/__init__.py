"""Relay's local stack: real emulators on loopback wired into the production event chain."""

from __future__ import annotations

from devstack.bridge import StorageCloudEvent, StorageEventBridge
from devstack.functions import FunctionsServer
from devstack.gcs import FakeGcsServer, GcsNotifications, create_bucket, fake_gcs_available, storage_client
from devstack.processes import ManagedProcess, ProcessError, ProcessSpec, free_port
from devstack.pubsub import PubSubEmulator, create_push_subscription, create_topic, emulator_available, publish
from devstack.stack import LocalStack, StackPorts

__all__ = [
    "FakeGcsServer",
    "FunctionsServer",
    "GcsNotifications",
    "LocalStack",
    "ManagedProcess",
    "ProcessError",
    "ProcessSpec",
    "PubSubEmulator",
    "StackPorts",
    "StorageCloudEvent",
    "StorageEventBridge",
    "create_bucket",
    "create_push_subscription",
    "create_topic",
    "emulator_available",
    "fake_gcs_available",
    "free_port",
    "publish",
    "storage_client",
]
